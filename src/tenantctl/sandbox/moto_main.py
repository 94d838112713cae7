"""`python -m tenantctl.sandbox.moto_main ARGS`: moto's server (``moto.server``'s
own arguments) with the CloudWatch Logs calls tenantctl makes that moto does
not implement: AssociateKmsKey and DisassociateKmsKey (a log group's key is
changed in place when a cell takes over its account's RDSOSMetrics group, or
gives it back to the account). Each only sets or clears the group's
``kmsKeyId``, as DescribeLogGroups then reports it."""

from __future__ import annotations

from typing import Any


def _group(response: Any) -> Any:
    from moto.logs.exceptions import ResourceNotFoundException

    group = response.logs_backend.groups.get(response._get_param("logGroupName"))
    if group is None:
        raise ResourceNotFoundException()
    return group


def associate_kms_key(self: Any) -> str:
    _group(self).kms_key_id = self._get_param("kmsKeyId")
    return ""


def disassociate_kms_key(self: Any) -> str:
    _group(self).kms_key_id = None
    return ""


def main() -> None:
    from moto.logs.responses import LogsResponse
    from moto.server import main as serve

    for call in (associate_kms_key, disassociate_kms_key):
        if not hasattr(LogsResponse, call.__name__):  # a moto that has it keeps its own
            setattr(LogsResponse, call.__name__, call)
    serve()


if __name__ == "__main__":
    main()
