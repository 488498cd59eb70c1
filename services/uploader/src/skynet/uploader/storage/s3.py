"""``s3://bucket/prefix``: an S3 bucket (or any S3-compatible store) as a target (boto3).

The endpoint comes from ``SKYNET_S3_ENDPOINT_URL`` (path-style addressing when set), credentials
the standard AWS way (environment, profile, instance role). TLS is verified unless ``s3_verify``
is off; ``s3_ca_bundle`` names a private CA.

Every object records its source generation in user metadata (``x-amz-meta-skynet-generation``),
so ``stat`` is one HEAD and ``matches`` is exact. Files below ``s3_multipart_threshold_mib`` go in
one PUT (with Content-MD5); larger ones by a resumable, parallel multipart upload (see
``_s3_multipart``) that is visible only once completed. ``move`` is a server-side copy (multipart
copy over 5 GiB) that keeps the metadata, then a delete. Keys under ``<prefix>/.skynet/`` are
skynet's own bookkeeping and are never listed; a local top-level folder named ``.skynet`` is
refused (InvalidPath) rather than mixed with them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from skynet.common.errors import (
    ConfigError,
    InvalidPath,
    RemoteAccessDenied,
    RemoteFull,
    RemoteRefused,
    RemoteUnavailable,
    SkynetError,
)
from skynet.common.messages import Generation
from skynet.common.paths import remote_join, validate_rel_path
from skynet.uploader.storage import _s3_multipart as mp
from skynet.uploader.storage._s3_client import make_client
from skynet.uploader.storage.base import (
    Backend,
    CallbackError,
    Capabilities,
    ProgressFn,
    RemoteEntry,
    UploadResult,
    guard_progress,
)
from skynet.uploader.storage.config import BackendSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024
SINGLE_COPY_LIMIT = 5 * 1024**3
# The store refuses this uploader as a whole, whatever the key (credentials, account, the bucket
# gone, the clock): the uploader pauses until it is put right instead of dead-lettering every file.
_DENIED_CODES = {
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoSuchBucket",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "InvalidToken",
}
_REFUSED_CODES = {
    "AccessDenied",  # may be a policy on some keys only: refused per file
    "InvalidBucketName",
    "EntityTooLarge",
    "KeyTooLongError",
    "InvalidArgument",
    "InvalidObjectState",
    "MethodNotAllowed",
}
_UNAVAILABLE_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "NoSuchUpload",  # another replica aborted our multipart upload: start again later
}
# Out of space or over a quota (MinIO's codes; 507 is HTTP's "Insufficient Storage"): retried,
# since room may be made, and never confused with an outage (the store answers).
_FULL_CODES = {"XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "QuotaExceeded", "InsufficientStorage"}


def classify(exc: BaseException, what: str = "") -> SkynetError:
    """Translate a botocore exception into the matching skynet error."""
    if isinstance(exc, SkynetError):
        return exc
    prefix = f"{what}: " if what else ""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = f"{prefix}{code or status} {error.get('Message', '')}".rstrip()
        if code in _DENIED_CODES:
            return RemoteAccessDenied(text)
        if code in _FULL_CODES or status == 507:
            return RemoteFull(f"{text}: the target is full; retried, free some space")
        if code in _UNAVAILABLE_CODES or status >= 500 or status in (408, 429):
            return RemoteUnavailable(text)
        if code == "KeyTooLongError":
            return InvalidPath(text)
        if code in _REFUSED_CODES or 400 <= status < 500:
            return RemoteRefused(text)
        return RemoteUnavailable(text)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return RemoteAccessDenied(f"{prefix}no usable AWS credentials (AWS_ACCESS_KEY_ID/…, AWS_PROFILE): {exc}")
    if isinstance(exc, ParamValidationError):
        return RemoteRefused(f"{prefix}{exc}")
    if isinstance(exc, (BotoCoreError, OSError)):
        return RemoteUnavailable(f"{prefix}{type(exc).__name__}: {exc}")
    return RemoteUnavailable(f"{prefix}{type(exc).__name__}: {exc}")


class S3Backend(Backend):
    scheme = "s3"
    capabilities = Capabilities(server_side_move=True, dir_move=False, resumable=True, exact_generation=True)

    def __init__(self, bucket: str, prefix: str, settings: BackendSettings, client: S3Client | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.settings = settings
        self._client = client
        self._meta_prefix = f"{self.prefix}/.skynet/" if self.prefix else ".skynet/"

    @property
    def client(self) -> S3Client:
        if self._client is None:
            try:
                self._client = make_client(self.settings)
            except (BotoCoreError, ValueError) as exc:
                raise ConfigError(f"S3 client: {exc}") from exc
        return self._client

    def _key(self, path: str) -> str:
        key = remote_join(self.prefix, validate_rel_path(path))
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise InvalidPath(f"S3 key for {path!r} is over {MAX_KEY_BYTES} bytes")
        if key.startswith(self._meta_prefix):
            raise InvalidPath(
                f"{path!r}: the top-level folder .skynet is where skynet keeps its bookkeeping on S3;"
                " rename the folder to have it mirrored"
            )
        return key

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def describe(self, path: str) -> str:
        return f"s3://{self.bucket}/{self._key(path)}"

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self._bucket_refusal(exc) from exc

    def _bucket_refusal(self, exc: Exception) -> SkynetError:
        """What a failed HEAD on the bucket means for this uploader.

        A HEAD's answer has no body, so no error code to classify by: a 404 or 403 on the bucket
        itself refuses this uploader as a whole, as NoSuchBucket or InvalidAccessKeyId do on any
        other request.
        """
        if isinstance(exc, ClientError):
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if status == 404:
                return RemoteAccessDenied(f"bucket {self.bucket} does not exist (404)")
            if status == 403:
                return RemoteAccessDenied(f"bucket {self.bucket}: access denied (403): the credentials or a policy")
        return classify(exc, f"bucket {self.bucket}")

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def stat(self, path: str) -> RemoteEntry | None:
        key = self._key(path)
        try:
            head = self._head(key)
        except Exception as exc:
            raise classify(exc, f"stat {self.describe(path)}") from exc
        if head is None:
            return None
        token = head.get("Metadata", {}).get(mp.META_GENERATION)
        modified = head.get("LastModified")
        return RemoteEntry(
            path=path,
            size=int(head.get("ContentLength", 0)),
            mtime=modified.timestamp() if modified is not None else None,
            generation=Generation.from_token(token) if token else None,
            checksum=str(head.get("ETag", "")).strip('"') or None,
        )

    def upload(self, path: str, local_file: str, generation: Generation, progress: ProgressFn) -> UploadResult:
        key = self._key(path)
        progress = guard_progress(progress)
        try:
            if generation.size < self.settings.s3_multipart_threshold_mib * mp.MiB:
                return self._put(key, local_file, generation, progress)
            part_size = mp.part_size_for(generation.size, self.settings.s3_part_size_mib)
            upload = mp.MultipartUpload(
                client=self.client,
                bucket=self.bucket,
                key=key,
                marker=mp.marker_key(self.prefix, key),
                local_file=local_file,
                generation=generation,
                part_size=part_size,
                concurrency=self.settings.s3_part_concurrency,
                checksum=self.settings.s3_checksum,
            )
            return upload.run(progress)
        except CallbackError as exc:
            raise exc.original from None
        except Exception as exc:
            raise classify(exc, f"upload {self.describe(path)}") from exc

    def _put(self, key: str, local_file: str, generation: Generation, progress: ProgressFn) -> UploadResult:
        data = mp.read_part(local_file, mp.Part(1, 0, generation.size))
        progress(0)
        resp = self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            Metadata={mp.META_GENERATION: generation.token()},
            **mp.body_checksum(data, self.settings.s3_checksum),  # type: ignore[arg-type]
        )
        progress(len(data))
        return UploadResult(bytes_sent=len(data), checksum=str(resp.get("ETag", "")).strip('"') or None)

    def delete(self, path: str) -> bool:
        """Delete the object, and abort any upload of it left open (no orphaned parts to bill)."""
        key = self._key(path)
        try:
            open_ids = mp.open_uploads(self.client, self.bucket, key)
            for upload_id in open_ids:
                mp.abort(self.client, self.bucket, key, upload_id)
            if open_ids:
                self.client.delete_object(Bucket=self.bucket, Key=mp.marker_key(self.prefix, key))
            if self._head(key) is None:
                return False
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise classify(exc, f"delete {self.describe(path)}") from exc
        return True

    def move(self, src: str, dst: str) -> None:
        ksrc, kdst = self._key(src), self._key(dst)
        if ksrc == kdst:
            return  # a copy onto itself is refused by S3, and the delete would then lose the object
        try:
            head = self._head(ksrc)
            if head is None:
                raise RemoteRefused(f"cannot move {src!r}: it is not on the target")
            size = int(head.get("ContentLength", 0))
            if size > SINGLE_COPY_LIMIT:
                mp.copy_large(self.client, self.bucket, ksrc, kdst, size, head)
            else:
                # The copy gets a whole-object checksum of its own: a multipart source's is
                # composite (a checksum of part checksums) and does not describe the copy.
                extra: dict[str, Any] = {"ChecksumAlgorithm": "CRC32"} if self.settings.s3_checksum == "crc32" else {}
                self.client.copy_object(
                    Bucket=self.bucket,
                    Key=kdst,
                    CopySource={"Bucket": self.bucket, "Key": ksrc},
                    MetadataDirective="COPY",
                    **extra,
                )
            self.client.delete_object(Bucket=self.bucket, Key=ksrc)
        except Exception as exc:
            raise classify(exc, f"move {self.describe(src)} to {kdst}") from exc

    def list(self, prefix: str = "") -> Iterator[RemoteEntry]:
        root = self._key(prefix)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": f"{root}/" if root else ""}
        try:
            while True:
                resp = self.client.list_objects_v2(**kwargs)
                for obj in resp.get("Contents", []):
                    key = obj["Key"]
                    if key.startswith(self._meta_prefix) or key.endswith("/"):
                        continue
                    yield RemoteEntry(
                        path=self._rel(key),
                        size=int(obj.get("Size", 0)),
                        mtime=obj["LastModified"].timestamp() if "LastModified" in obj else None,
                        checksum=str(obj.get("ETag", "")).strip('"') or None,
                    )
                if not resp.get("IsTruncated"):
                    return
                kwargs["ContinuationToken"] = resp["NextContinuationToken"]
        except Exception as exc:
            raise classify(exc, f"list {self.describe(prefix)}") from exc

    def uploads_under(self, prefix: str) -> Sequence[str]:
        root = self._key(prefix)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": f"{root}/" if root else ""}
        found: set[str] = set()
        try:
            while True:
                resp = self.client.list_multipart_uploads(**kwargs)
                keys = (u["Key"] for u in resp.get("Uploads", []))
                found.update(self._rel(k) for k in keys if not k.startswith(self._meta_prefix))
                if not resp.get("IsTruncated"):
                    break
                kwargs.update(
                    KeyMarker=resp.get("NextKeyMarker", ""), UploadIdMarker=resp.get("NextUploadIdMarker", "")
                )
        except Exception as exc:
            raise classify(exc, f"list uploads {self.describe(prefix)}") from exc
        return sorted(found)

    def cleanup(self, path: str) -> None:
        """Abort every open multipart upload of ``path`` and forget its marker."""
        key = self._key(path)
        try:
            for upload_id in mp.open_uploads(self.client, self.bucket, key):
                mp.abort(self.client, self.bucket, key, upload_id)
            self.client.delete_object(Bucket=self.bucket, Key=mp.marker_key(self.prefix, key))
        except Exception as exc:
            raise classify(exc, f"cleanup {self.describe(path)}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def open_backend(target: str, settings: BackendSettings) -> S3Backend:
    """Entry point for ``s3://bucket/prefix``. Connects lazily, on first use."""
    parts = urlsplit(target)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"SKYNET_TARGET: expected s3://bucket/prefix, got {target!r}")
    return S3Backend(parts.netloc, unquote(parts.path), settings)
