"""Checkpoints, config.json and inputs are data, never code: a scan of the package's source."""

import ast
import pathlib
import sys

import jaxdl

PACKAGE = pathlib.Path(jaxdl.__file__).parent
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
# Where the package imports code on purpose: its own submodules (lazy re-exports, fixed
# names) and the experiment file the user names with --config (a get_config() script, like
# a flax example's config; what a run saves, config.json, is read back as JSON).
# The lazy re-exports (jaxdl._lazy) import fixed module names; config files are loaded by path.
# A config's model named 'package.module:Class' (models/by_path.py) imports that module and
# accepts only a flax.linen.Module class from it; a workdir cannot name one inside itself.
ALLOWED_IMPORTS = {"_lazy.py": "import_module", "config.py": "spec_from_file_location",
                   "by_path.py": "import_module"}


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _name(node):
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def test_no_pickle_eval_or_exec_anywhere():
    problems = []
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                if any(n.split(".")[0] in UNSAFE_MODULES for n in names):
                    problems.append(f"{where}: imports {names}")
            if not isinstance(node, ast.Call):
                continue
            name = _name(node)
            owner = getattr(getattr(node.func, "value", None), "id", "")
            # re.compile is fine; compile() and builtins.eval are not
            bare = isinstance(node.func, ast.Name) or owner == "builtins"
            if name in UNSAFE_CALLS and bare:
                problems.append(f"{where}: calls {name}()")
            keywords = {k.arg: k.value for k in node.keywords}
            pickle_flag = keywords.get("allow_pickle")
            if pickle_flag is not None and not (isinstance(pickle_flag, ast.Constant)
                                                and pickle_flag.value is False):
                problems.append(f"{where}: allow_pickle is not False")
            if name == "load" and isinstance(node.func, ast.Attribute) and getattr(
                    node.func.value, "id", "") in ("np", "numpy") and pickle_flag is None:
                problems.append(f"{where}: numpy.load without allow_pickle=False")
            if name in ("import_module", "spec_from_file_location") and \
                    ALLOWED_IMPORTS.get(path.name) != name:
                problems.append(f"{where}: imports code by name ({name})")
    assert not problems, "\n".join(problems)


def test_the_scan_catches_what_it_looks_for(tmp_path, monkeypatch):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport numpy as np\nnp.load('x')\neval('1')\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    try:
        test_no_pickle_eval_or_exec_anywhere()
    except AssertionError as e:
        text = str(e)
    else:
        raise AssertionError("the scan found nothing in a file full of problems")
    assert "imports ['pickle'" in text and "numpy.load without" in text and "calls eval" in text
