"""AWS failures as one line the operator can act on.

boto3 raises a zoo of exceptions (ClientError with a code, NoCredentialsError,
EndpointConnectionError …) whose default text is long and sometimes a
traceback away. Everything the EC2 provider does goes through `translate`, so
the console and scripts only ever see `Ec2Error` with a message that says what
happened and what to do. Messages never contain credentials: we only quote the
error code, AWS's own message (which never echoes a secret) and our config keys.
"""

from __future__ import annotations

from opsconsole.errors import OperatorError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

CREDENTIALS_HINT = ("credentials come only from boto3's standard chain (AWS_PROFILE, AWS_ACCESS_KEY_ID/"
                    "AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, an instance role), never from the opsconsole config")

_BAD_CREDENTIALS = {"AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
                    "IncompleteSignature", "InvalidAccessKeyId", "MissingAuthenticationToken"}
_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired"}
_DENIED = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "OptInRequired"}
_QUOTA = {"InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "ResourceLimitExceeded",
          "SecurityGroupLimitExceeded", "RulesPerSecurityGroupLimitExceeded"}
_THROTTLED = {"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"}


class Ec2Error(OperatorError):
    """An EC2 operation failed; `str()` is one line naming the cause and what to do."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def aws_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ('' for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def translate(exc: BaseException, doing: str, where: str) -> Ec2Error:
    """Turn a boto3/botocore failure into an Ec2Error.

    `doing` says what we were doing ("creating 2 instances"); `where` names the
    group and its config path ("groups.itrust.ec2") so the operator knows which
    key to fix.
    """
    if isinstance(exc, Ec2Error):
        return exc
    prefix = f"{where}: {doing} failed"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return Ec2Error(f"{prefix}: no usable AWS credentials found; {CREDENTIALS_HINT}", "NoCredentials")
    if isinstance(exc, NoRegionError):
        return Ec2Error(f"{prefix}: no region; set `region` under {where}", "NoRegion")
    if isinstance(exc, EndpointConnectionError):
        return Ec2Error(f"{prefix}: cannot reach the EC2 endpoint ({exc.kwargs.get('endpoint_url', '?')}); "
                        f"check the network, `region` and `endpoint_url` under {where}", "EndpointConnection")
    if isinstance(exc, ClientError):
        code = aws_code(exc)
        text = " ".join(str(exc.response.get("Error", {}).get("Message", "")).split())
        if code in _BAD_CREDENTIALS:
            return Ec2Error(f"{prefix}: AWS refused the credentials ({code}); {CREDENTIALS_HINT}", code)
        if code in _EXPIRED:
            return Ec2Error(f"{prefix}: the AWS credentials have expired ({code}); refresh them "
                            f"(e.g. `aws sso login`) and try again", code)
        if code in _DENIED:
            return Ec2Error(f"{prefix}: the AWS identity is not allowed to do this ({code}: {text}); "
                            f"grant it the EC2 permissions opsconsole needs", code)
        if code.startswith("InvalidAMIID"):
            return Ec2Error(f"{prefix}: the AMI does not exist or is not usable in this region ({code}); "
                            f"check `ami` and `region` under {where}", code)
        if code in _QUOTA or code == "InsufficientInstanceCapacity":
            what = "AWS has no capacity for this instance type right now" if code == "InsufficientInstanceCapacity" \
                else "an AWS quota is exhausted"
            return Ec2Error(f"{prefix}: {what} ({code}: {text}); lower `count`, pick another `instance_type`, "
                            f"or request a quota increase in the Service Quotas console", code)
        if code in _THROTTLED:
            return Ec2Error(f"{prefix}: AWS kept throttling the requests even after retrying with backoff "
                            f"({code}); wait a minute and run the command again", code)
        if code.startswith("InvalidSubnet"):
            return Ec2Error(f"{prefix}: unknown subnet ({code}); check `subnet_id` under {where}", code)
        if code.startswith("InvalidKeyPair"):
            return Ec2Error(f"{prefix}: unknown key pair ({code}); check `key_name` under {where}", code)
        if code.startswith("InvalidGroup"):
            return Ec2Error(f"{prefix}: unknown security group ({code}: {text}); check `security_groups` under {where}",
                            code)
        if code.startswith("InvalidInstanceType") or (
                code == "InvalidParameterValue" and "instancetype" in text.lower().replace(" ", "")):
            return Ec2Error(f"{prefix}: AWS does not offer this instance type here ({code}); "
                            f"check `instance_type` under {where}", code)
        return Ec2Error(f"{prefix}: {code or 'error'}: {text or exc}", code)
    if isinstance(exc, BotoCoreError):
        return Ec2Error(f"{prefix}: {' '.join(str(exc).split())}", type(exc).__name__)
    return Ec2Error(f"{prefix}: {type(exc).__name__}: {' '.join(str(exc).split())}", type(exc).__name__)
