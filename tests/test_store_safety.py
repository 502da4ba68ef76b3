"""The store's writes: foreign folders are never replaced, concurrent builds share one, killed builds leave
nothing that survives the next build."""
import multiprocessing
import os
import signal
import subprocess
import sys

import fixtures_formats as ff
import pytest

from data_preprocess import longctr_parquet
from lainctr.data import store, synthetic
from lainctr.errors import InputFileError, exit_code


def _convert(source, output):
    return longctr_parquet.main(["--input", source, "--output", output, "--dataset_id", "kuaivideo", "--no_progress"])


def test_converter_refuses_to_replace_a_foreign_folder(tmp_path, capsys):
    source = ff.write_longctr(str(tmp_path / "in"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "README").write_text("mine")
    (out / "train.h5").write_text("another dataset")
    with pytest.raises(InputFileError, match=rf"^{out}: refusing to replace a folder that is not a dataset "
                                             r"folder of format 1 \(it holds README\)"):
        _convert(source, str(out))
    assert exit_code(longctr_parquet.main, ["--input", source, "--output", str(out), "--dataset_id", "kuaivideo",
                                            "--no_progress"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {out}: refusing to replace")
    assert sorted(p.name for p in out.iterdir()) == ["README", "train.h5"] and (out / "README").read_text() == "mine"


def test_a_previous_output_or_an_empty_folder_is_replaced(tmp_path):
    source = ff.write_longctr(str(tmp_path / "in"))
    out = tmp_path / "out"
    out.mkdir()
    assert _convert(source, str(out)) == str(out)          # empty folder
    assert _convert(source, str(out)) == str(out)          # the converter's own previous output
    assert store.is_complete(str(out))


def test_write_dataset_refuses_a_foreign_folder_and_keeps_it(tmp_path):
    target = tmp_path / "tiny"
    target.mkdir()
    (target / "notes.txt").write_text("keep")
    with pytest.raises(InputFileError, match=r"it holds notes\.txt"):
        synthetic.build(str(target), "tiny", show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"] and os.listdir(target) == ["notes.txt"]


def _build_counting(data_dir: str, log: str) -> None:
    def build(folder):
        with open(log, "a") as fd:
            fd.write(f"{os.getpid()}\n")
        synthetic.build(folder, "tiny", dataset_id="synthetic_tiny", show_progress=False)
    store.build_once(data_dir, build)
    assert store.is_complete(data_dir)


def test_concurrent_builders_share_one_build(tmp_path):
    data_dir, log = str(tmp_path / "synthetic_tiny"), str(tmp_path / "builds.log")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_build_counting, args=(data_dir, log)) for _ in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(300)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    assert len(open(log).read().split()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["builds.log", "synthetic_tiny"]


SLOW_BUILD = """
import sys, time
from lainctr.data import store, synthetic
write = store._write_h5
def slow(path, columns):
    write(path, columns)
    print("writing", flush=True)
    time.sleep(60)
store._write_h5 = slow
synthetic.build(sys.argv[1], "tiny", show_progress=False)
"""


def _killed_build(target: str, sig: int) -> int:
    child = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, target], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"     # the temporary folder holds its first file now
    child.send_signal(sig)
    return child.wait(60)


def temporaries(parent):
    return [p.name for p in parent.iterdir() if p.name != "tiny"]


def test_sigkilled_build_is_cleaned_at_the_next_build(tmp_path):
    target = tmp_path / "tiny"
    assert _killed_build(str(target), signal.SIGKILL) == -signal.SIGKILL
    assert any(name.startswith(".tiny.tmp-") for name in temporaries(tmp_path))
    synthetic.build(str(target), "tiny", show_progress=False)
    assert store.is_complete(str(target)) and temporaries(tmp_path) == []


def test_sigterm_removes_the_temporary_folder(tmp_path):
    assert _killed_build(str(tmp_path / "tiny"), signal.SIGTERM) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
