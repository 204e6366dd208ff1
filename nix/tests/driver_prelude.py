# What the NixOS test driver provides to a test script, typed as far as these tests use it; used by
# scripts/check-nix.sh to compile, type-check (mypy) and lint (pyflakes) the scripts offline, the
# way the driver does before it boots any VM.
from contextlib import AbstractContextManager
from typing import Optional, Tuple


class Machine:
    def succeed(self, *commands: str, timeout: Optional[int] = None) -> str:
        raise NotImplementedError
    def fail(self, *commands: str, timeout: Optional[int] = None) -> str:
        raise NotImplementedError
    def execute(self, command: str, check_return: bool = True, check_output: bool = True, timeout: Optional[int] = 900) -> Tuple[int, str]:
        raise NotImplementedError
    def wait_for_unit(self, unit: str, user: Optional[str] = None, timeout: int = 900) -> None: ...
    def wait_for_open_port(self, port: int, addr: str = "localhost", timeout: int = 900) -> None: ...
    def wait_until_succeeds(self, command: str, timeout: int = 900) -> str:
        raise NotImplementedError
    def start(self, allow_reboot: bool = False) -> None: ...
    def shutdown(self) -> None: ...


def start_all() -> None: ...
def subtest(name: str) -> AbstractContextManager[None]:
    raise NotImplementedError


upstream = Machine()
ncps = Machine()
ncps1 = Machine()
ncps2 = Machine()
client = Machine()
db = Machine()
