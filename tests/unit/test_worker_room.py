"""The logical replication workers a server leaves move copies: only the apply workers enabled
subscriptions hold for good are taken (table-sync workers come and go: the copies share one),
within ``max_worker_processes`` less the launcher's."""

from tenantctl.cell_database import WorkerRoom


def test_each_copy_takes_an_apply_worker_and_all_of_them_one_table_sync_worker():
    assert WorkerRoom(max_workers=4, max_processes=8, subscriptions=3).copies == 0  # its apply worker alone
    assert WorkerRoom(max_workers=4, max_processes=8, subscriptions=1).copies == 2
    assert WorkerRoom(max_workers=16, max_processes=8, subscriptions=1).copies == 5
    assert WorkerRoom(max_workers=4, max_processes=8, subscriptions=6).copies == 0
