"""Stand-ins shared by the patch tests. vLLM is imported only when one is made,
from the tree conftest put on sys.path."""


def fake_cuda(major: int, minor: int, name: str):
    """A CUDA platform (CudaPlatformBase) that reports the given GPU without touching one."""
    from vllm.platforms.cuda import CudaPlatformBase
    from vllm.platforms.interface import DeviceCapability

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


class LaunchRecorder:
    """Stands in for a Triton kernel: ``kernel[grid](**kwargs)`` records kwargs."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append(kwargs)
