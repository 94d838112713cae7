"""Which grants on a tenant's key an AWS service made for itself (``service_grant``): those
`check`'s kms-grants and `refresh`'s unmanaged key grants leave alone, as ListGrants shows them."""

from __future__ import annotations

import pytest

from tenantctl.checks.aws_posture import service_grant


@pytest.mark.parametrize("grant, made_by_aws", [
    ({"GranteePrincipal": "rds.eu-west-1.amazonaws.com", "Operations": ["Decrypt"]}, True),
    # a regional service principal is of its partition's domain
    ({"GranteePrincipal": "rds.cn-north-1.amazonaws.com.cn", "Operations": ["Decrypt"]}, True),
    ({"GranteePrincipal": "rds.eusc-de-east-1.amazonaws.eu", "Operations": ["Decrypt"]}, True),
    ({"GranteePrincipal": "arn:aws-cn:iam::999999999999:role/rds.cn-north-1.amazonaws.com.cn"}, False),
    ({"GranteePrincipal": "arn:aws:iam::111122223333:root", "GranteeServicePrincipal": "rds.amazonaws.com"}, True),
    # EBS's own, as the KMS guide's example shows it
    ({"GranteePrincipal": "arn:aws:sts::111122223333:assumed-role/aws:ec2-infrastructure/i-5d476fab"}, True),
    ({"GranteePrincipal": "arn:aws:iam::999999999999:root", "Operations": ["Decrypt"]}, False),
    ({"GranteePrincipal": "arn:aws:iam::111122223333:role/tenantctl-platform-rot-role"}, False),
    ({"GranteePrincipal": "arn:aws:sts::111122223333:assumed-role/admin/alice"}, False),
    ({"GranteePrincipal": "arn:aws:iam::111122223333:role/amazonaws.com-lookalike"}, False),
    # IAM names may hold dots: a role named like a service is still a role
    ({"GranteePrincipal": "arn:aws:iam::999999999999:role/rds.eu-west-1.amazonaws.com"}, False),
])
def test_a_grant_is_a_services_own_only_by_its_grantee(grant, made_by_aws) -> None:
    assert service_grant(grant) is made_by_aws
