"""Run folders: config.json and environment.json, the host CPU read from cpuinfo."""
import json

import jax

from tvad_jax import runs
from tvad_jax.jobs.config import Config

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile rdtscp

processor\t: 1
model name\t: some other model
flags\t\t: fpu avx
"""

ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes sve sve2 cpuid
CPU part\t: 0xd4f
"""


def test_host_cpu_reads_the_first_processor_and_its_vector_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(INTEL)
    assert runs.host_cpu(path) == {
        "cpu": "Intel(R) Xeon(R) Processor",
        "vector_extensions": ["amx_tile", "avx", "avx2", "avx512_bf16", "avx512f", "fma",
                              "sse4_2"]}
    path.write_text(ARM)
    assert runs.host_cpu(path) == {"cpu": "0xd4f", "vector_extensions": ["asimd", "sve",
                                                                         "sve2"]}


def test_host_cpu_without_cpuinfo_has_no_flags(tmp_path):
    assert runs.host_cpu(tmp_path / "absent")["vector_extensions"] == []


def test_new_run_dir_writes_config_and_environment(tmp_path, capsys):
    cfg = Config()
    first = runs.new_run_dir("probe", cfg, tmp_path)
    second = runs.new_run_dir("probe", cfg, tmp_path)        # in the same second: a suffix
    assert first != second and second.name.startswith("probe-")
    assert str(first) in capsys.readouterr().err
    assert json.loads((first / "config.json").read_text())["runs_dir"] == cfg.runs_dir
    env = json.loads((first / "environment.json").read_text())
    assert env["packages"]["jax"] == jax.__version__
    assert env["backend"] == jax.default_backend()
    assert env["devices"] == jax.device_count()
    assert isinstance(env["host"]["vector_extensions"], list)


def test_machine_summary_names_the_cpu_or_the_devices():
    env = {"backend": "cpu", "device_kind": "cpu", "devices": 1, "packages": {"jax": "9.9"},
           "host": {"cpu": "Some CPU", "cpu_count": 2,
                    "vector_extensions": ["amx_tile", "avx", "avx2", "avx512f", "fma"]}}
    assert runs.machine_summary(env) == "Some CPU (2 cores; avx2, avx512f, amx_tile), jax 9.9"
    env["host"]["vector_extensions"] = []
    assert runs.machine_summary(env) == "Some CPU (2 cores), jax 9.9"
    env.update(backend="gpu", device_kind="NVIDIA H100", devices=8)
    assert runs.machine_summary(env) == "8 x NVIDIA H100 (gpu), jax 9.9"
