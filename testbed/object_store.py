"""An S3-compatible object store on loopback for the index: moto's server (``moto[server]``, a dev dependency).

No S3-compatible server installs here without a download, so the test bed runs moto's, which
speaks the S3 REST API. LanceDB reaches it through its own ``s3://`` support, configured as the
AWS tools are: the environment :func:`s3_server` yields (``AWS_ENDPOINT_URL``, keys, region, and
``AWS_ALLOW_HTTP``, without which LanceDB refuses a plain-HTTP endpoint).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from research.testbed.processes import ServerProcess, free_port


@contextmanager
def s3_server(folder: Path, bucket: str) -> Iterator[dict[str, str]]:
    """moto's S3 server with ``bucket`` in it, until the block ends; the environment that points LanceDB and
    boto3 at it (its log in ``folder``)."""
    import boto3

    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    moto = [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)]
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    with ServerProcess(moto, f"http://127.0.0.1:{port}/moto-api/", folder / "moto.log") as server:
        server.wait_healthy(60)
        keys = {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"], **keys)
        s3.create_bucket(Bucket=bucket)
        yield env
