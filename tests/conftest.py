"""Test fixtures for real services live in tests/fixtures/, one module per service."""

pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.broker",
    "tests.fixtures.sftp_server",
    "tests.fixtures.s3_server",
    "tests.fixtures.postgres",
    "tests.fixtures.stack",
]
