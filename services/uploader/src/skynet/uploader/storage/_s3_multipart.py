"""Resumable, parallel S3 multipart uploads (private to the s3 backend).

**How an interrupted upload is found again.** ListMultipartUploads gives a key's open uploads but
not the metadata they were created with, so at create time the backend also writes a tiny *marker*
object, ``<prefix>/.skynet/uploads/<sha256(key)[:40]>``, holding the key, the upload id, the
source generation token and the part size. A later attempt for the same key:

1. lists the key's open uploads and reads the marker;
2. continues the marked upload only if it is still open *and* was created for the same
   generation and part size; every other open upload of the key (older generations, abandoned
   ones) is aborted, so no orphaned parts are left to be billed;
3. lists the upload's parts and keeps a part only if its ETag equals the MD5 of the local bytes of
   that part (the verification does not trust the marker for content); the rest is uploaded,
   several parts in parallel;
4. completes the upload and deletes the marker.

**Integrity.** Every body carries a checksum that the server verifies: by default a CRC32
(``x-amz-checksum-crc32``, with ``ChecksumAlgorithm=CRC32`` on the multipart upload, as the AWS
SDKs do), or a Content-MD5 for stores that predate flexible checksums (``SKYNET_S3_CHECKSUM=md5``).
CRC32 costs the uploader a tenth of an MD5, and it lets the server combine part checksums
instead of hashing the whole object again at completion (moto, for one, spends longer on that
than on receiving the parts). The marker records the choice; an upload begun with the other one
is started over.

The generation is also in the upload's own metadata (``x-amz-meta-skynet-generation``), so the
completed object records it. Parts are read into memory: at most ``MEMORY_BUDGET`` bytes of parts
are in flight at once, whatever the file size.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import zlib
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from skynet.common.errors import LocalFileError, TransientError
from skynet.common.messages import Generation
from skynet.uploader.storage._localfile import open_regular

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

from skynet.uploader.storage.base import ProgressFn, UploadResult

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART = 8 * MiB
MAX_PARTS = 10_000
MEMORY_BUDGET = 64 * MiB
META_GENERATION = "skynet-generation"
MARKER_FOLDER = ".skynet/uploads"


def part_size_for(size: int, configured_mib: int = 0) -> int:
    """Part size for a file of ``size`` bytes: ≥ 8 MiB, growing so there are never over 10,000 parts."""
    needed = max(MIN_PART, math.ceil(size / MAX_PARTS), configured_mib * MiB)
    return math.ceil(needed / MiB) * MiB


@dataclass(frozen=True)
class Part:
    number: int
    offset: int
    length: int


def plan(size: int, part_size: int) -> list[Part]:
    count = max(1, math.ceil(size / part_size))
    return [Part(n + 1, n * part_size, min(part_size, size - n * part_size)) for n in range(count)]


def marker_key(prefix: str, key: str) -> str:
    name = f"{MARKER_FOLDER}/{hashlib.sha256(key.encode('utf-8')).hexdigest()[:40]}"
    return f"{prefix}/{name}" if prefix else name


def read_part(local_file: str, part: Part) -> bytes:
    try:
        with open_regular(local_file) as f:
            f.seek(part.offset)
            data = f.read(part.length)
    except OSError as exc:
        raise LocalFileError(f"cannot read {local_file}: {exc.strerror or exc}") from exc
    if len(data) != part.length:
        raise TransientError(f"{local_file} shrank while being uploaded; it will be tried again")
    return data


def body_checksum(data: bytes, kind: str) -> dict[str, str]:
    """The request parameter that makes the server verify ``data``: CRC32 or Content-MD5."""
    if kind == "crc32":
        crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        return {"ChecksumAlgorithm": "CRC32", "ChecksumCRC32": crc}
    return {"ContentMD5": base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()}


def _md5_of(local_file: str, part: Part) -> str:
    return hashlib.md5(read_part(local_file, part), usedforsecurity=False).hexdigest()


def open_uploads(client: S3Client, bucket: str, key: str) -> list[str]:
    """Ids of the open multipart uploads of exactly ``key``, oldest first."""
    ids: list[tuple[Any, str]] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
    while True:
        resp = client.list_multipart_uploads(**kwargs)
        ids += [(u.get("Initiated"), u["UploadId"]) for u in resp.get("Uploads", []) if u.get("Key") == key]
        if not resp.get("IsTruncated"):
            break
        kwargs.update(KeyMarker=resp.get("NextKeyMarker", ""), UploadIdMarker=resp.get("NextUploadIdMarker", ""))
    return [i for _, i in sorted(ids, key=lambda t: str(t[0]))]


def abort(client: S3Client, bucket: str, key: str, upload_id: str) -> None:
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise


def _uploaded_parts(client: S3Client, bucket: str, key: str, upload_id: str) -> Iterator[tuple[int, str, str | None]]:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
    while True:
        resp = client.list_parts(**kwargs)
        for p in resp.get("Parts", []):
            yield p["PartNumber"], p["ETag"].strip('"'), p.get("ChecksumCRC32")
        if not resp.get("IsTruncated"):
            return
        kwargs["PartNumberMarker"] = resp.get("NextPartNumberMarker", 0)


def _read_marker(client: S3Client, bucket: str, mkey: str) -> dict[str, Any] | None:
    try:
        body = client.get_object(Bucket=bucket, Key=mkey)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    try:
        marker = json.loads(body)
    except ValueError:
        return None
    return marker if isinstance(marker, dict) else None


@dataclass
class MultipartUpload:
    client: S3Client
    bucket: str
    key: str
    marker: str
    local_file: str
    generation: Generation
    part_size: int
    concurrency: int
    checksum: str = "crc32"

    def _find_or_create(self) -> str:
        token = self.generation.token()
        open_ids = open_uploads(self.client, self.bucket, self.key)
        marker = _read_marker(self.client, self.bucket, self.marker) if open_ids else None
        upload_id: str | None = None
        if (
            marker is not None
            and marker.get("upload_id") in open_ids
            and marker.get("generation") == token
            and marker.get("part_size") == self.part_size
            and marker.get("key") == self.key
            and marker.get("checksum", "md5") == self.checksum
        ):
            upload_id = str(marker["upload_id"])
        for other in open_ids:
            if other != upload_id:
                log.info("aborting stale multipart upload %s of s3://%s/%s", other, self.bucket, self.key)
                abort(self.client, self.bucket, self.key, other)
        if upload_id is not None:
            return upload_id
        extra: dict[str, Any] = {"ChecksumAlgorithm": "CRC32"} if self.checksum == "crc32" else {}
        upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=self.key, Metadata={META_GENERATION: token}, **extra
        )["UploadId"]
        record = {
            "key": self.key,
            "upload_id": upload_id,
            "generation": token,
            "part_size": self.part_size,
            "checksum": self.checksum,
        }
        self.client.put_object(Bucket=self.bucket, Key=self.marker, Body=json.dumps(record).encode())
        return upload_id

    def _send(self, upload_id: str, part: Part) -> CompletedPartTypeDef:
        data = read_part(self.local_file, part)
        resp = self.client.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=upload_id,
            PartNumber=part.number,
            Body=data,
            **body_checksum(data, self.checksum),  # type: ignore[arg-type]
        )
        return self._completed(part.number, resp["ETag"], resp.get("ChecksumCRC32"))

    def _completed(self, number: int, etag: str, crc32: str | None) -> CompletedPartTypeDef:
        done: CompletedPartTypeDef = {"PartNumber": number, "ETag": etag}
        if self.checksum == "crc32" and crc32:
            done["ChecksumCRC32"] = crc32
        return done

    def run(self, progress: ProgressFn) -> UploadResult:
        upload_id = self._find_or_create()
        parts = plan(self.generation.size, self.part_size)
        uploaded = {n: (etag, crc) for n, etag, crc in _uploaded_parts(self.client, self.bucket, self.key, upload_id)}
        etags: dict[int, CompletedPartTypeDef] = {}
        todo: list[Part] = []
        for part in parts:
            etag, crc = uploaded.get(part.number, (None, None))
            if etag is not None and etag == _md5_of(self.local_file, part):
                etags[part.number] = self._completed(part.number, f'"{etag}"', crc)
            else:
                todo.append(part)
        reused = sum(p.length for p in parts if p.number in etags)
        if reused:
            log.info("resuming s3://%s/%s: %d of %d parts already there", self.bucket, self.key, len(etags), len(parts))
        done = reused
        progress(done)
        workers = max(1, min(self.concurrency, MEMORY_BUDGET // self.part_size, len(todo) or 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3-part") as pool:
            pending: dict[Future[CompletedPartTypeDef], Part] = {}
            queue = list(reversed(todo))
            try:
                while queue or pending:
                    while queue and len(pending) < workers:
                        part = queue.pop()
                        pending[pool.submit(self._send, upload_id, part)] = part
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        part = pending.pop(fut)
                        etags[part.number] = fut.result()
                        done += part.length
                        progress(done)
            finally:
                for fut in pending:
                    fut.cancel()
        resp = self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [etags[n] for n in sorted(etags)]},
        )
        self.client.delete_object(Bucket=self.bucket, Key=self.marker)
        return UploadResult(bytes_sent=done - reused, resumed_from=reused, checksum=resp.get("ETag", "").strip('"'))


def copy_large(client: S3Client, bucket: str, src: str, dst: str, size: int, head: dict[str, Any]) -> None:
    """Server-side copy of an object over 5 GiB (UploadPartCopy), keeping its metadata."""
    part_size = max(512 * MiB, math.ceil(size / MAX_PARTS))
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": dst, "Metadata": head.get("Metadata", {})}
    if head.get("ContentType"):
        kwargs["ContentType"] = head["ContentType"]
    upload_id = client.create_multipart_upload(**kwargs)["UploadId"]
    try:
        parts: list[CompletedPartTypeDef] = []
        for part in plan(size, part_size):
            resp = client.upload_part_copy(
                Bucket=bucket,
                Key=dst,
                UploadId=upload_id,
                PartNumber=part.number,
                CopySource={"Bucket": bucket, "Key": src},
                CopySourceRange=f"bytes={part.offset}-{part.offset + part.length - 1}",
            )
            parts.append({"PartNumber": part.number, "ETag": resp["CopyPartResult"]["ETag"]})
        client.complete_multipart_upload(Bucket=bucket, Key=dst, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except BaseException:
        abort(client, bucket, dst, upload_id)
        raise
