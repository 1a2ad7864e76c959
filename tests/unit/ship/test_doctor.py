import copy

import pytest

from vllm_volta.ship.validate import doctor
from vllm_volta.ship.validate.doctor import diagnose, failed, relevant_env

V100 = {"index": 0, "name": "Tesla V100-SXM2-32GB", "capability": [7, 0], "memory_mib": 32768}
HEALTHY = {
    "host": "v100-a", "python": "3.12.3",
    "nvidia_smi": {"gpus": [V100, {**V100, "index": 1}], "driver_version": "535.183.01", "error": None},
    "distributions": {"vllm": "0.9.2+volta.3", "vllm-volta": "0.9.2.3", "torch": "2.7.0",
                      "triton": "3.3.0", "xformers": "0.0.30"},
    "vllm_volta_requires": ["vllm==0.9.2+volta.3"],
    "provenance": {"series": "v3", "patches": 9},
    "provenance_path": "/venv/lib/python3.12/site-packages/vllm-0.9.2+volta.3.dist-info/volta_provenance.json",
    "probe": {
        "torch": {"version": "2.7.0+cu126", "cuda": "12.6", "cuda_available": True,
                  "arch_flags": "-gencode compute=compute_70,code=sm_70",
                  "arch_list": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], "gpus": []},
        "vllm": {"version": "0.9.2+volta.3", "platform": "CudaPlatform",
                 "attention_backend": {"64": "TORCH_SDPA", "128": "TORCH_SDPA"}},
    },
    "env": {"NCCL_PROTO": "simple", "VLLM_ATTENTION_BACKEND": "TORCH_SDPA"},
}


def facts(**changes):
    data = copy.deepcopy(HEALTHY)
    for path, value in changes.items():
        node = data
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return data


def statuses(checks):
    return {c.id: c.status for c in checks}


def test_healthy_v100_host_passes():
    checks = diagnose(HEALTHY)
    assert not failed(checks)
    assert {c.status for c in checks} <= {"pass", "info"}
    assert statuses(checks)["attention.backend"] == "pass"


@pytest.mark.parametrize(("change", "check_id"), [
    ({"nvidia_smi__gpus": [{**V100, "name": "NVIDIA H100", "capability": [9, 0]}]}, "gpu.capability"),
    ({"nvidia_smi__gpus": [], "nvidia_smi__error": "nvidia-smi: not found"}, "gpu.present"),
    ({"nvidia_smi__driver_version": "470.82.01"}, "driver"),
    ({"probe__torch__cuda": None, "probe__torch__version": "2.7.0+cpu"}, "torch.cuda_runtime"),
    ({"probe__torch__cuda": "13.0"}, "torch.cuda_runtime"),
    ({"probe__torch__arch_list": ["sm_80", "sm_90"], "probe__torch__arch_flags": ""}, "torch.sm_70"),
    ({"probe__torch": {"error": "ImportError: libcudart.so.12"}}, "torch.import"),
    ({"distributions__vllm": "0.9.2"}, "vllm.version"),
    ({"distributions__vllm": "0.9.2+volta.3.empty"}, "vllm.version"),
    ({"distributions__vllm": None}, "vllm.installed"),
    ({"vllm_volta_requires": ["vllm==0.9.2+volta.2"]}, "vllm_volta.meta"),
    ({"probe__vllm__attention_backend": {"64": "XFORMERS", "128": "XFORMERS"}}, "attention.backend"),
    ({"probe__vllm": {"error": "ModuleNotFoundError: vllm._C"}}, "vllm.import"),
    ({"env__VLLM_USE_V1": "1"}, "env.VLLM_USE_V1"),
    ({"env__VLLM_ATTENTION_BACKEND": "FLASH_ATTN"}, "env.VLLM_ATTENTION_BACKEND"),
])
def test_each_failure_is_named(change, check_id):
    checks = diagnose(facts(**change))
    assert statuses(checks)[check_id] == "fail", checks
    assert failed(checks)
    assert all(c.hint for c in checks if c.status == "fail"), "every failure says what to do"


def test_non_volta_smoke_run_is_a_warning_when_allowed():
    h100 = facts(nvidia_smi__gpus=[{**V100, "capability": [9, 0]}])
    assert statuses(diagnose(h100, allow_non_volta=True))["gpu.capability"] == "warn"


def test_warnings_do_not_fail():
    checks = diagnose(facts(env__NCCL_PROTO="LL128", provenance=None,
                            **{"distributions__vllm-volta": None}))
    s = statuses(checks)
    assert (s["env.NCCL_PROTO"], s["vllm_volta.meta"], s["vllm.provenance"]) == ("warn", "warn", "warn")
    assert not failed(checks)


def test_gpus_from_torch_when_nvidia_smi_is_missing():
    data = facts(nvidia_smi__gpus=[], nvidia_smi__driver_version=None)
    data["probe"]["torch"]["gpus"] = [V100]
    s = statuses(diagnose(data))
    assert s["gpu.capability"] == "pass" and s["driver"] == "warn"


def test_relevant_env_hides_secrets():
    env = relevant_env({"NCCL_PROTO": "simple", "VLLM_API_KEY": "sk-1", "HOME": "/root",
                        "VLLM_VOLTA_INDEX_TOKEN": "t", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1", "NCCL_PROTO": "simple", "VLLM_API_KEY": "***",
                   "VLLM_VOLTA_INDEX_TOKEN": "***"}


def test_gather_facts_on_a_machine_without_gpu(monkeypatch):
    """Real probing here (torch only): no nvidia-smi, no GPU; each gap is a fact, not a crash."""
    real = doctor.run_probe
    monkeypatch.setattr(doctor, "run_probe",
                        lambda timeout=300, env=None: real(timeout, with_vllm=False, env=env))
    data = doctor.gather_facts({"NCCL_PROTO": "simple", "PATH": "/bin"})
    assert data["env"] == {"NCCL_PROTO": "simple"}
    assert data["probe"]["vllm"] is None and "torch" in data["probe"]
    assert failed(diagnose(data))  # no GPU on this machine
