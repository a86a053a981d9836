"""The tests' TCP forwarder lives in ``devstack.tcp_proxy`` (the fault suite cuts S3 with it)."""

from devstack.tcp_proxy import TcpProxy, target_of, via

__all__ = ["TcpProxy", "target_of", "via"]
