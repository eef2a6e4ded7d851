"""A class graded as shards on several machines and merged gives what one run gives.

One small class (six students, the ``1_numpy`` notebook, solved and blank) is
graded once with ``grade`` and once as three shards merged together; the
merged output must equal the single run's except the time each notebook took.
Then copies of the shards are edited as a careless or hostile hand with write
access to the shard folders could, and merge must refuse each edit, naming
what is wrong, without writing anything inside or outside --out.
"""
import csv
import hashlib
import json
import random
import re
import shutil
from pathlib import Path

import pytest

from autograder import cli
from autograder.grading import grade
from autograder.paths import EXERCISES_DIR, SOLUTIONS_DIR
from autograder.shards import MANIFEST, MergeRefused, merge, select, shard_of
from autograder.submissions import GradingInputError, Submission
from course import full_marks
from mha_checks.registry import assignments

ASSIGNMENT = assignments()[0]
N = 3
STUDENTS = 6
SECONDS = 6  # the seconds column of grades.csv


def make_class(root: Path, n: int) -> Path:
    for i in range(n):
        folder = root / f"student{i:02d}" / ASSIGNMENT
        folder.mkdir(parents=True)
        source = SOLUTIONS_DIR if i % 2 == 0 else EXERCISES_DIR
        shutil.copy(source / ASSIGNMENT / "1_numpy.ipynb", folder)
    return root


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class graded once as a whole and once as N shards (grading is the slow part)."""
    root = tmp_path_factory.mktemp("shards")
    subs = make_class(root / "subs", STUDENTS)
    single = grade(subs, root / "single", jobs=2, gpu_available=False, verbose=False)
    shard_dirs = []
    for k in range(1, N + 1):
        grade(subs, root / f"shard{k}", jobs=2, gpu_available=False, verbose=False, shard=(k, N))
        shard_dirs.append(root / f"shard{k}")
    return root, subs, single, shard_dirs


def manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


def csv_rows(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def without_time(log: bytes) -> bytes:
    """A graded log's first line ends with the notebook's time, "15/15 (2.1 s)"."""
    first, _, rest = log.partition(b"\n")
    return re.sub(rb" \(\d+\.\d s\)$", b"", first) + b"\n" + rest


def test_the_shards_split_the_class_into_disjoint_parts_that_cover_it(graded):
    root, _, single, shard_dirs = graded
    everything = [(r.student, r.assignment, r.notebook) for r in single]
    assert len(everything) == STUDENTS * 3  # 1_numpy graded, 2_cupy needs a GPU, 3_pytorch missing
    parts = []
    for k, folder in enumerate(shard_dirs, start=1):
        record = manifest(folder)
        assert (record["shard"], record["of"]) == (k, N)
        assert [tuple(key) for key in record["class"]] == everything
        keys = [tuple(entry[:3]) for entry in record["notebooks"]]
        assert keys == [key for key in everything if shard_of(key, N) == k]
        assert [tuple(row[:3]) for row in csv_rows(folder / "grades.csv")[1:]] == keys
        assert {p.relative_to(folder / "results").with_suffix("").parts
                for p in (folder / "results").rglob("*.json")} == set(keys)
        assert (folder / "students.csv").read_bytes() == (root / "single" / "students.csv").read_bytes()
        parts.append(set(keys))
    assert sum(len(p) for p in parts) == len(everything), "no notebook is in two shards"
    assert set().union(*parts) == set(everything), "every notebook is in a shard"


def test_the_partition_depends_only_on_the_notebook_and_n():
    class_ = [Submission(f"s{i}", ASSIGNMENT, nb, None, "") for i in range(50)
              for nb in ("1_numpy", "2_cupy", "3_pytorch")]
    shuffled = random.Random(0).sample(class_, len(class_))
    for k in range(1, N + 1):
        assert set(select(shuffled, k, N)) == set(select(class_, k, N))
    # Fixed values (SHA-256, not Python's per-process hash): any machine and any run gives these.
    notebooks = ("1_numpy", "2_cupy", "3_pytorch")
    assert [shard_of(("student00", "chXX_any_assignment", nb), 4) for nb in notebooks] == [4, 3, 4]
    assert [shard_of(("student00", "chXX_any_assignment", nb), 1000) for nb in notebooks] == [244, 271, 204]
    # A late student moves nobody else's notebooks.
    late = class_ + [Submission("aaa_late", ASSIGNMENT, nb, None, "") for nb in ("1_numpy", "3_pytorch")]
    for k in range(1, N + 1):
        assert set(select(late, k, N)) - set(select(class_, k, N)) <= set(late[len(class_):])
    # Balanced: 30 000 notebooks over 8 shards are each within 5 % of the mean.
    sizes = [0] * 8
    for i in range(10_000):
        for nb in ("1_numpy", "2_cupy", "3_pytorch"):
            sizes[shard_of((f"student{i:05d}", "chXX_any_assignment", nb), 8) - 1] += 1
    assert all(abs(size - 30_000 / 8) < 0.05 * 30_000 / 8 for size in sizes), sizes


def test_merged_shards_equal_one_run_over_the_class(graded, tmp_path):
    root, _, single, shard_dirs = graded
    merged = merge(list(reversed(shard_dirs)), tmp_path / "merged", verbose=False)
    out, whole = tmp_path / "merged", root / "single"
    assert [(r.student, r.assignment, r.notebook, r.status, r.score) for r in merged] \
        == [(r.student, r.assignment, r.notebook, r.status, r.score) for r in single]
    assert {r.score for r in merged if r.notebook == "1_numpy"} == {0, full_marks(ASSIGNMENT, "1_numpy")}

    # grades.csv: the same bytes once the seconds column is the same.
    merged_rows, single_rows = csv_rows(out / "grades.csv"), csv_rows(whole / "grades.csv")
    assert len(merged_rows) == len(single_rows) == STUDENTS * 3 + 1
    for m, s in zip(merged_rows, single_rows):
        assert m[:SECONDS] + m[SECONDS + 1:] == s[:SECONDS] + s[SECONDS + 1:]
    rewritten = tmp_path / "single-with-merged-seconds.csv"
    with open(rewritten, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(s[:SECONDS] + [m[SECONDS]] + s[SECONDS + 1:]
                                for m, s in zip(merged_rows, single_rows))
    assert (out / "grades.csv").read_bytes() == rewritten.read_bytes()

    assert (out / "students.csv").read_bytes() == (whole / "students.csv").read_bytes()
    assert files(out / "feedback") == files(whole / "feedback")
    merged_logs, single_logs = files(out / "logs"), files(whole / "logs")
    assert merged_logs.keys() == single_logs.keys()
    assert {p: without_time(b) for p, b in merged_logs.items()} \
        == {p: without_time(b) for p, b in single_logs.items()}
    assert files(out / "results").keys() == files(whole / "results").keys()
    assert not (out / MANIFEST).exists()


def test_merge_refuses_a_missing_shard_and_names_it(graded, tmp_path, capsys):
    _, _, _, shard_dirs = graded
    lost = [tuple(entry[:3]) for entry in manifest(shard_dirs[1])["notebooks"]]
    out = tmp_path / "merged"
    with pytest.raises(MergeRefused) as refused:
        merge([shard_dirs[0], shard_dirs[2]], out, verbose=False)
    message = str(refused.value)
    assert f"shard 2/{N} is missing" in message
    assert f"{len(lost)} notebook(s) have no grade" in message
    for key in lost[:10]:
        assert " ".join(key) in message
    assert not out.exists(), "nothing is written, no grade invented"

    rc = cli.main(["merge", str(shard_dirs[0]), str(shard_dirs[2]), "--out", str(out)])
    assert rc == 1
    assert f"shard 2/{N} is missing" in capsys.readouterr().err
    assert not out.exists()


def test_merge_refuses_one_notebook_graded_two_ways(graded, tmp_path):
    _, _, _, shard_dirs = graded
    # The same shard graded again from another file: its record gives other digests.
    again = tmp_path / "shard1-again"
    shutil.copytree(shard_dirs[0], again)
    record = manifest(again)
    student, assignment, notebook, _ = record["notebooks"][0]
    record["notebooks"][0][3] = "0" * 64
    (again / MANIFEST).write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(MergeRefused, match=f"{student} {assignment} {notebook} in shard 1/{N}"):
        merge([*shard_dirs, again], tmp_path / "merged", verbose=False)
    # An identical copy of a shard is harmless.
    merge([*shard_dirs, shutil.copytree(shard_dirs[0], tmp_path / "shard1-copy")],
          tmp_path / "merged", verbose=False)


def test_merge_refuses_what_is_not_a_finished_shard(graded, tmp_path):
    root, _, _, shard_dirs = graded
    with pytest.raises(MergeRefused, match="no shard.json"):
        merge([*shard_dirs, root / "single"], tmp_path / "merged", verbose=False)
    with pytest.raises(GradingInputError, match="inside it"):
        merge(shard_dirs, shard_dirs[0] / "merged", verbose=False)


@pytest.mark.parametrize("bad", ["0/3", "4/3", "2", "a/b", "1/0", "-1/3", "1/2/3"])
def test_a_bad_shard_is_a_usage_error(bad, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["grade", "submissions", "--shard", bad])
    assert exit_.value.code == 2
    assert "--shard" in capsys.readouterr().err


# --------------------------------------------------------------------------- shard folders are not trusted
# Whoever can write to a shard folder (a careless or hostile hand, a broken disk) must not be able
# to change a grade, invent or drop a student, or make merge write outside --out.


def copy_shards(shard_dirs: list, where: Path) -> list:
    where.mkdir(parents=True)
    return [Path(shutil.copytree(d, where / d.name)) for d in shard_dirs]


def write_record(folder: Path, record: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(record), encoding="utf-8")


def result_file(folder: Path, key: tuple) -> Path:
    student, assignment, notebook = key
    return folder / "results" / student / assignment / f"{notebook}.json"


def record_digest_of_edit(folder: Path, key: tuple) -> None:
    """What a hand that can write shard.json does after editing a result: record its new digest."""
    record = manifest(folder)
    index = [tuple(entry[:3]) for entry in record["notebooks"]].index(key)
    record["result_sha256"][index] = hashlib.sha256(result_file(folder, key).read_bytes()).hexdigest()
    write_record(folder, record)


def snapshot(root: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def blank_notebook(single: list) -> tuple:
    """A notebook that scored 0: the one an edit would raise."""
    return next((r.student, r.assignment, r.notebook) for r in single
                if r.notebook == "1_numpy" and r.score == 0)


def refused(shards: list, out: Path, tmp_path: Path) -> str:
    """Merge, expecting a refusal that writes nothing anywhere; return its message."""
    before = snapshot(tmp_path)
    with pytest.raises(MergeRefused) as refusal:
        merge(shards, out, verbose=False)
    assert not out.exists(), "a refused merge writes nothing"
    assert snapshot(tmp_path) == before, "nor anything outside --out"
    return str(refusal.value)


def blank_result_in_copied_shards(graded, tmp_path):
    """Copies of the shards, the blank notebook's key, its shard folder, its result file and that
    result as saved: what an attack on a saved result starts from."""
    _, _, single, shard_dirs = graded
    shards = copy_shards(shard_dirs, tmp_path / "shards")
    key = blank_notebook(single)
    folder = shards[shard_of(key, N) - 1]
    path = result_file(folder, key)
    return shards, key, folder, path, json.loads(path.read_text(encoding="utf-8"))


def test_merge_refuses_a_result_edited_after_its_shard_finished(graded, tmp_path, capsys):
    shards, key, folder, path, saved = blank_result_in_copied_shards(graded, tmp_path)
    for test in saved["tests"]:  # a careful edit: every test passed, the score their sum
        test["score"] = test["points"]
    saved["score"] = saved["max_score"]
    path.write_text(json.dumps(saved), encoding="utf-8")

    message = refused(shards, tmp_path / "merged", tmp_path)
    assert f"{path}: changed since its shard finished" in message
    assert "delete" in message and f"--shard {shard_of(key, N)}/{N}" in message
    assert cli.main(["merge", *map(str, shards), "--out", str(tmp_path / "merged")]) == 1
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize("edit, why", [
    # the example: 1000 out of 15 with every test failed
    (lambda saved: saved.update(score=1000), "its score 1000 is not the sum of its tests' scores (0)"),
    (lambda saved: (saved["tests"][0].update(score=saved["tests"][0]["points"] / 2),
                    saved.update(score=saved["tests"][0]["points"] / 2)),
     "test {grade_id} scored {half:g}, but a test scores 0 or all its {points:g} points"),
    (lambda saved: saved.update(max_score=saved["max_score"] + 1000 - saved["tests"][0]["points"],
                                score=1000, tests=[{**saved["tests"][0], "points": 1000, "score": 1000},
                                                   *saved["tests"][1:]]),
     "its maximum is {raised:g}, but the instructor's notebook gives {max:g} points"),
    (lambda saved: saved.update(status="graded-ish"), "status 'graded-ish' is not one the grader writes"),
    (lambda saved: saved.update(notes="not a list"), "notes is not a list of strings"),
], ids=["1000-of-15", "half-a-test", "more-points", "odd-status", "bad-shape"])
def test_merge_refuses_an_impossible_result_even_with_its_digest_recorded(graded, tmp_path, edit, why):
    shards, key, folder, path, saved = blank_result_in_copied_shards(graded, tmp_path)
    first = saved["tests"][0]
    facts = dict(grade_id=first["grade_id"], points=first["points"], half=first["points"] / 2,
                 max=saved["max_score"], raised=saved["max_score"] + 1000 - first["points"])
    edit(saved)
    path.write_text(json.dumps(saved), encoding="utf-8")
    record_digest_of_edit(folder, key)

    message = refused(shards, tmp_path / "merged", tmp_path)
    assert f"{path}: " + why.format(**facts) in message


def test_merge_refuses_two_different_folders_claiming_one_shard(graded, tmp_path):
    _, _, single, shard_dirs = graded
    shards = copy_shards(shard_dirs, tmp_path / "b")
    key = blank_notebook(single)
    k = shard_of(key, N)
    # An edited copy of the shard in a folder that sorts first, its record made to agree.
    edited = Path(shutil.copytree(shards[k - 1], tmp_path / "a" / f"shard{k}"))
    path = result_file(edited, key)
    saved = json.loads(path.read_text(encoding="utf-8"))
    for test in saved["tests"]:
        test["score"] = test["points"]
    saved["score"] = saved["max_score"]
    path.write_text(json.dumps(saved), encoding="utf-8")
    record_digest_of_edit(edited, key)

    message = refused([*shards, edited], tmp_path / "merged", tmp_path)
    assert f"2 folders claim shard {k}/{N} and differ: {edited} and {shards[k - 1]}" in message
    assert f"{' '.join(key)} in shard {k}/{N} ({edited}) and shard {k}/{N} ({shards[k - 1]})" in message


@pytest.mark.parametrize("attack", ["climbing-student", "absolute-student", "climbing-assignment",
                                    "climbing-notebook"])
def test_merge_refuses_a_name_that_would_leave_its_folder(graded, tmp_path, attack):
    _, _, single, shard_dirs = graded
    shards = copy_shards(shard_dirs, tmp_path / "s1" / "s2")
    escape = "../../../ESCAPED_BY_MERGE"
    key = {"climbing-student": (escape, ASSIGNMENT, "1_numpy"),
           "absolute-student": (str(tmp_path / "abs" / "PHANTOM"), ASSIGNMENT, "1_numpy"),
           "climbing-assignment": ("student00", escape, "1_numpy"),
           "climbing-notebook": ("student00", ASSIGNMENT, escape)}[attack]
    # A full-marks result planted where merge would look for this name, and the name added to the
    # class of every shard and to the notebooks of the shard it hashes to, as a crafted shard.json would.
    model = next((r.student, r.assignment, r.notebook) for r in single
                 if r.notebook == "1_numpy" and r.score)
    saved = json.loads(result_file(shards[shard_of(model, N) - 1], model).read_text(encoding="utf-8"))
    saved.update(student=key[0], assignment=key[1], notebook=key[2])
    home = shards[shard_of(key, N) - 1]
    planted = result_file(home, key)
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text(json.dumps(saved), encoding="utf-8")
    for folder in shards:
        record = manifest(folder)
        record["class"].append(list(key))
        if folder == home:
            record["notebooks"].append([*key, saved["digest"]])
            record["result_sha256"].append(hashlib.sha256(planted.read_bytes()).hexdigest())
        write_record(folder, record)

    out = tmp_path / "o1" / "o2" / "merged"
    message = refused(shards, out, tmp_path)
    assert any(f"{folder / MANIFEST} names {key!r}" in message for folder in shards)
    assert "grade that shard again" in message


@pytest.mark.parametrize("removed", ["a student", "a notebook"])
def test_merge_refuses_a_student_or_notebook_missing_from_every_record(graded, tmp_path, removed):
    _, _, single, shard_dirs = graded
    shards = copy_shards(shard_dirs, tmp_path / "shards")
    if removed == "a student":
        gone = [(r.student, r.assignment, r.notebook) for r in single if r.student == "student01"]
    else:
        gone = [("student03", ASSIGNMENT, "3_pytorch")]
    for folder in shards:
        record = manifest(folder)
        record["class"] = [key for key in record["class"] if tuple(key) not in gone]
        kept = [i for i, entry in enumerate(record["notebooks"]) if tuple(entry[:3]) not in gone]
        record["notebooks"] = [record["notebooks"][i] for i in kept]
        record["result_sha256"] = [record["result_sha256"][i] for i in kept]
        write_record(folder, record)

    message = refused(shards, tmp_path / "merged", tmp_path)
    if removed == "a student":
        assert "lists 1 student(s) of whom no shard.json records a notebook, so they would vanish " \
               "from grades.csv: student01." in message
    else:
        assert "1 notebook(s) of students in" in message
        assert f"so they would have no row in grades.csv: student03 {ASSIGNMENT} 3_pytorch." in message
    assert "students.csv" in message and "grade every shard again" in message


def test_merge_refuses_a_result_that_links_outside_its_shard(graded, tmp_path):
    _, _, single, shard_dirs = graded
    shards = copy_shards(shard_dirs, tmp_path / "shards")
    key = blank_notebook(single)
    path = result_file(shards[shard_of(key, N) - 1], key)
    elsewhere = tmp_path / "elsewhere.json"
    shutil.move(path, elsewhere)
    path.symlink_to(elsewhere)  # the same bytes, so only where it lives is wrong

    message = refused(shards, tmp_path / "merged", tmp_path)
    assert f"{path}: lies outside its shard folder" in message


def test_merge_refuses_to_write_through_a_link_out_of_the_output_folder(graded, tmp_path):
    _, _, single, shard_dirs = graded
    out, elsewhere = tmp_path / "merged", tmp_path / "elsewhere"
    (out / "logs").mkdir(parents=True)
    elsewhere.mkdir()
    (out / "logs" / single[0].student).symlink_to(elsewhere)
    before = snapshot(tmp_path)
    with pytest.raises(MergeRefused, match="outside the output folder"):
        merge(shard_dirs, out, verbose=False)
    assert snapshot(tmp_path) == before


def test_merge_refuses_a_notebook_listed_twice_in_the_class(graded, tmp_path):
    """A key repeated in every shard's class would be a second, phantom row in grades.csv."""
    _, _, _, shard_dirs = graded
    shards = copy_shards(shard_dirs, tmp_path / "shards")
    for folder in shards:
        record = manifest(folder)
        record["class"].append(record["class"][0])
        write_record(folder, record)
    message = refused(shards, tmp_path / "merged", tmp_path)
    assert "a notebook appears twice in its class" in message and "grade that shard again" in message


def test_merge_refuses_a_record_without_the_digests_of_its_results(graded, tmp_path):
    """A shard.json of the earlier format says nothing about its results' bytes: it is run again."""
    _, _, _, shard_dirs = graded
    shards = copy_shards(shard_dirs, tmp_path / "shards")
    record = manifest(shards[0])
    del record["result_sha256"]
    record["format"] = 1
    write_record(shards[0], record)
    message = refused(shards, tmp_path / "merged", tmp_path)
    assert f"{shards[0] / MANIFEST} cannot be read (format 1, expected 2" in message
    assert "grade that shard again" in message
