"""The logical replication workers a server leaves move copies: only the apply workers enabled
subscriptions hold for good are taken (table-sync workers come and go: the copies share one),
within ``max_worker_processes`` less the launcher's and, from PostgreSQL 18, within the replication
origins ``max_active_replication_origins`` leaves (one per subscription, a table copy's the same way)."""

from tenantctl.cell_database import WorkerRoom, origins_setting


def test_each_copy_takes_an_apply_worker_and_all_of_them_one_table_sync_worker():
    assert WorkerRoom(max_workers=4, max_processes=8, subscriptions=3).copies == 0  # its apply worker alone
    assert WorkerRoom(max_workers=4, max_processes=8, subscriptions=1).copies == 2
    assert WorkerRoom(max_workers=16, max_processes=8, subscriptions=1).copies == 5
    assert WorkerRoom(max_workers=4, max_processes=8, subscriptions=6).copies == 0


def test_from_postgresql_18_the_replication_origins_left_bound_the_room_too():
    # 10 origins (the default), 5 taken (disabled subscriptions' included): 5 free, not the 13 workers left.
    room = WorkerRoom(max_workers=16, max_processes=32, subscriptions=3, max_origins=10, origins=5)
    assert (room.free, room.copies) == (5, 4)
    assert "max_active_replication_origins 10 with 5 taken" in room.figures()
    # Where origins are plenty, the workers bound it; before 18 (None) origins are not read.
    assert WorkerRoom(max_workers=4, max_processes=8, subscriptions=1, max_origins=10, origins=1).copies == 2
    assert WorkerRoom(max_workers=16, max_processes=32, subscriptions=3, origins=12).free == 13
    assert WorkerRoom(max_workers=16, max_processes=32, subscriptions=0, max_origins=10, origins=12).copies == 0


def test_the_origins_limit_read_is_the_one_the_servers_version_has():
    # Before PostgreSQL 18 a subscriber's origins are bounded by max_replication_slots; 18 gave them their own.
    assert origins_setting(170008) == "max_replication_slots"
    assert origins_setting(160004) == "max_replication_slots"
    assert origins_setting(180000) == "max_active_replication_origins"
    assert origins_setting(180006) == "max_active_replication_origins"
    room = WorkerRoom(max_workers=16, max_processes=32, subscriptions=3, max_origins=10, origins=5,
                      origins_limit=origins_setting(170008))
    assert room.free == 5 and "max_replication_slots 10 with 5 taken" in room.figures()
