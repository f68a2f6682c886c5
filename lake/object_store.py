"""The lake's files wherever the lake root is: a local folder or an S3-compatible bucket, through pyarrow's
filesystems.

Delta tables go through deltalake and polars, which take the object store's options themselves
(``Settings.storage_options``). Everything else the lake keeps as plain files (the landing zone, the HTTP
destinations' progress, the list of gold tables) goes through :func:`filesystem`, which builds the same
store from the same ``AWS_*`` variables, so a path or URI is never opened with ``open()`` or ``pathlib``
unless it is local.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.fs as pafs

from lake.settings import object_store_options

S3_SCHEMES = ("s3", "s3a")


def is_local(uri: str) -> bool:
    """True for a path on this machine (or a ``file://`` URI), False for an object-store URI."""
    return "://" not in uri or uri.startswith("file://")


def s3_filesystem(options: dict[str, str]) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem for the object-store ``options`` (the ``AWS_*`` names deltalake takes): the
    endpoint of an S3-compatible server (plain HTTP when ``AWS_ALLOW_HTTP`` is true), its region and keys;
    what is missing is left to the AWS SDK's own chain (instance credentials, ``~/.aws``)."""
    arguments: dict[str, object] = {}
    endpoint = options.get("AWS_ENDPOINT_URL")
    if endpoint:
        if "://" not in endpoint:
            http = options.get("AWS_ALLOW_HTTP", "").lower() in ("true", "1")
            endpoint = f"{'http' if http else 'https'}://{endpoint}"
        arguments["endpoint_override"] = endpoint
    if options.get("AWS_REGION"):
        arguments["region"] = options["AWS_REGION"]
    if options.get("AWS_ACCESS_KEY_ID") and options.get("AWS_SECRET_ACCESS_KEY"):
        arguments["access_key"] = options["AWS_ACCESS_KEY_ID"]
        arguments["secret_key"] = options["AWS_SECRET_ACCESS_KEY"]
        arguments["session_token"] = options.get("AWS_SESSION_TOKEN")
    return pafs.S3FileSystem(**arguments)


def filesystem(uri: str | Path, storage_options: dict[str, str] | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``uri`` and the path of ``uri`` in it (no trailing slash): the local filesystem for a
    folder, an S3 filesystem built from ``storage_options`` (default: the ``AWS_*`` variables) for an
    ``s3://`` URI, pyarrow's own resolution for any other scheme."""
    uri = str(uri)
    if is_local(uri):
        return pafs.LocalFileSystem(), uri.removeprefix("file://").rstrip("/") or "/"
    scheme, path = uri.split("://", 1)
    if scheme in S3_SCHEMES:
        options = object_store_options() if storage_options is None else storage_options
        return s3_filesystem(options), path.rstrip("/")
    return pafs.FileSystem.from_uri(uri)


def read_bytes(uri: str, storage_options: dict[str, str] | None = None) -> bytes | None:
    """The content of the file at ``uri``, or None when there is none."""
    fs, path = filesystem(uri, storage_options)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path, compression=None) as stream:
        return stream.read()


def write_bytes(uri: str, data: bytes, storage_options: dict[str, str] | None = None) -> None:
    """Replace the file at ``uri`` by ``data`` as a whole: a reader sees the old content or the new, never a
    part (locally through a temporary file renamed over it; on object storage a single PUT is atomic)."""
    fs, path = filesystem(uri, storage_options)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        with fs.open_output_stream(temporary, compression=None) as out:
            out.write(data)
        fs.move(temporary, path)
        return
    with fs.open_output_stream(path, compression=None) as out:
        out.write(data)


def join(base: str, *parts: str) -> str:
    """``base`` (a folder or a URI) and ``parts`` joined by ``/``."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def upload_folder(source: Path, uri: str, storage_options: dict[str, str] | None = None) -> int:
    """Copy every file under the local folder ``source`` to ``uri`` at the same relative paths, one at a time
    in the order of their modification times, as a sink delivers them: on object storage each object's
    ``LastModified`` (the lake's arrival time there) keeps that order, to the second. The files copied."""
    fs, base = filesystem(uri, storage_options)
    files = sorted((p for p in source.rglob("*") if p.is_file()), key=lambda p: (p.stat().st_mtime_ns, p))
    for path in files:
        target = f"{base}/{path.relative_to(source).as_posix()}"
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with path.open("rb") as data, fs.open_output_stream(target, compression=None) as out:
            while block := data.read(8 << 20):
                out.write(block)
    return len(files)


def delete_folder(uri: str, storage_options: dict[str, str] | None = None) -> None:
    """Delete the folder (or object-store prefix) ``uri`` and everything under it (nothing when missing)."""
    fs, path = filesystem(uri, storage_options)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)
