"""Energy per inference (stages/power.py): the tegrastats parsers on lines of several L4T
releases, RAPL through a counter wrap-around, a user command, and no source said as such."""

import os
import sys
from pathlib import Path

import pytest

from edgegate.stages import power
from edgegate.stages.power import (NoPowerSource, Rapl, energy_delta_uj, energy_per_inference,
                                   open_source, tegrastats_power_mw, tegrastats_rails)

# Lines in the shape each release prints, written from published tegrastats output (NVIDIA's
# tegrastats documentation and users' posted logs); the numbers are this test's own.
L4T_32_NANO = ("RAM 1655/3956MB (lfb 311x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
               "CPU [12%@102,10%@102,11%@102,12%@102] EMC_FREQ 3%@1600 GR3D_FREQ 0%@76 APE 25 "
               "PLL@36.5C CPU@39C PMIC@50C GPU@37C AO@47.5C thermal@38C "
               "POM_5V_IN 2132/2189 POM_5V_GPU 78/78 POM_5V_CPU 275/275")
L4T_35_ORIN_NX = ("RAM 3503/7337MB (lfb 7x1MB) SWAP 430/3668MB (cached 1MB) "
                  "CPU [11%@729,13%@729,9%@729,18%@729,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@305 "
                  "GR3D2_FREQ 0%@0 VIC_FREQ 115 APE 174 CV0@42.718C CPU@44.093C SOC2@42.625C "
                  "GPU@41.343C tj@46.968C VDD_IN 4915mW/4800mW VDD_CPU_GPU_CV 449mW/449mW "
                  "VDD_SOC 1431mW/1431mW")
L4T_36_ORIN_NANO = ("09-21-2025 15:38:17 RAM 3645/7620MB (lfb 63x4MB) SWAP 236/3810MB (cached 0MB) "
                    "CPU [1%@729,1%@729,4%@729,1%@729,0%@729,0%@729] EMC_FREQ 0%@204 "
                    "GR3D_FREQ 0%@[305] NVDEC off NVJPG off VIC off OFA off APE 200 cpu@44.125C "
                    "soc2@43.375C gpu@44.531C tj@44.531C VDD_IN 2957mW/3000mW "
                    "VDD_CPU_GPU_CV 486mW/486mW VDD_SOC 1012mW/1012mW")
L4T_36_THREE_VALUES = ("09-01-2026 09:25:18 RAM 5739/7546MB (lfb 1x2MB) GR3D_FREQ 33% cpu@50C/50C "
                       "VDD_IN 9761mW/9000mW/9900mW VDD_CPU_GPU_CV 4238mW/4238mW/4238mW "
                       "VDD_SOC 1825mW/1825mW/1825mW")
AGX_ORIN = ("RAM 3000/30000MB (lfb 1x1MB) SWAP 0/15000MB GR3D_FREQ 0% "
            "VDD_GPU_SOC 4876mW/4876mW VDD_CPU_CV 975mW/975mW VIN_SYS_5V0 4461mW/4461mW")


@pytest.mark.parametrize("line, rail, mw", [
    (L4T_32_NANO, "POM_5V_IN", 2132), (L4T_35_ORIN_NX, "VDD_IN", 4915),
    (L4T_36_ORIN_NANO, "VDD_IN", 2957), (L4T_36_THREE_VALUES, "VDD_IN", 9761)])
def test_tegrastats_board_input_rail_instantaneous_of_each_release(line, rail, mw):
    assert tegrastats_power_mw(line) == mw
    assert rail in tegrastats_rails(line)
    assert "RAM" not in tegrastats_rails(line)           # "RAM 1655/3956MB" is no rail


def test_a_board_without_an_input_rail_needs_the_rails_named():
    assert tegrastats_power_mw(AGX_ORIN) is None                 # never a guessed total
    rails = ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")
    assert tegrastats_power_mw(AGX_ORIN, rails) == 4876 + 975 + 4461
    assert tegrastats_power_mw(AGX_ORIN, ("VDD_IN",)) is None


def _zone(root: Path, name: str, energy: int, max_range: int) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text(f"{energy}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_range}\n")
    return zone


def test_rapl_counts_through_the_counter_wrap(tmp_path):
    """A fake powercap tree (this host has no readable /sys/class/powercap): the package zone's
    counter wraps during the window; its subzone (already inside the package) is not added."""
    max_range = 262143328850
    zone = _zone(tmp_path, "intel-rapl:0", max_range - 1_000_000, max_range)
    _zone(tmp_path, "intel-rapl:0:0", 5, max_range)
    assert energy_delta_uj(max_range - 10, 5, max_range) == 16
    ticks = iter(range(1, 10**6))

    def infer():          # each inference: 0.5 J more on the counter, wrapping on the third
        now = int((zone / "energy_uj").read_text()) + 500_000
        (zone / "energy_uj").write_text(str(now if now <= max_range else now - max_range - 1))
        next(ticks)

    source = open_source("rapl", powercap=tmp_path)
    assert [z.name for z in source.zones] == ["intel-rapl:0"]
    got = energy_per_inference(source, infer, window_s=0, min_runs=4)
    assert got["record"]["inferences"] == 4 and got["record"]["source"].startswith("rapl (package-0")
    assert got["energy_mj_per_inference"] == pytest.approx(500.0)


def test_a_user_command_sampled_in_mw(tmp_path):
    script = tmp_path / "meter.py"
    script.write_text("print('power: 1500 mW')\n")
    source = open_source(f"command:{sys.executable} {script}")
    got = energy_per_inference(source, lambda: sum(range(1000)), window_s=0.6)
    assert got["power_mw_mean"] == pytest.approx(1500.0)
    assert got["record"]["samples"] >= 2
    runs = got["record"]["inferences"]
    assert got["energy_mj_per_inference"] == pytest.approx(1500.0 * got["record"]["window_s"] / runs,
                                                           rel=0.01)


def test_no_source_says_which_were_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))                     # no tegrastats here
    with pytest.raises(NoPowerSource) as exc:
        open_source(powercap=tmp_path / "powercap")
    assert "tegrastats: not on PATH" in str(exc.value) and "rapl: no" in str(exc.value)
    with pytest.raises(NoPowerSource, match="unknown power source 'watts'"):
        open_source("watts")
    zone = _zone(tmp_path / "pc", "intel-rapl:0", 1, 10)
    (zone / "energy_uj").chmod(0)
    if os.access(zone / "energy_uj", os.R_OK):
        return                                                    # root reads any file
    with pytest.raises(NoPowerSource, match="not readable"):
        Rapl(tmp_path / "pc")


def test_this_host_gives_a_number_or_the_reason():
    """On this machine: RAPL/tegrastats measured if present, else the reason; never invented."""
    try:
        source = open_source()
    except NoPowerSource as exc:
        assert "tegrastats" in str(exc) and "rapl" in str(exc)
        return
    got = energy_per_inference(source, lambda: sum(range(10000)), window_s=0.3)
    assert got["energy_mj_per_inference"] > 0 and power.WINDOW_S > 0
