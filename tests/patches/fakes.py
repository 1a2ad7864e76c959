"""Stand-ins shared by the patch tests (imported after conftest put the tree on sys.path)."""

from vllm.platforms.cuda import CudaPlatformBase
from vllm.platforms.interface import DeviceCapability


def fake_cuda(major: int, minor: int, name: str) -> CudaPlatformBase:
    """A CUDA platform that reports the given GPU without touching one."""

    class FakeCudaPlatform(CudaPlatformBase):

        @classmethod
        def get_device_capability(cls, device_id: int = 0):
            return DeviceCapability(major=major, minor=minor)

        @classmethod
        def get_device_name(cls, device_id: int = 0) -> str:
            return name

        @classmethod
        def get_device_total_memory(cls, device_id: int = 0) -> int:
            return 32 << 30

        @classmethod
        def is_fully_connected(cls, physical_device_ids) -> bool:
            return True

    return FakeCudaPlatform()
