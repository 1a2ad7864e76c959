"""Property: for any series, apply then refresh reproduces every patch byte for byte."""

import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vllm_volta.series import model, stack

from .synth import commit_change, lines, make_root, reset_upstream, snapshot

quiet = lambda *_: None  # noqa: E731

FILES = ["a.py", "b.py", "pkg/c.py", "pkg/deep/d.txt"]

edit = st.tuples(
    st.sampled_from(FILES + ["new1.py", "pkg/new2.py"]),
    st.one_of(
        st.none(),  # delete (if present)
        st.lists(st.tuples(st.integers(0, 39), st.text("abcxyz ()=", min_size=0, max_size=12)), min_size=1, max_size=4),
    ),
)
series_strategy = st.lists(
    st.tuples(st.lists(edit, min_size=1, max_size=3), st.sampled_from(model.TIERS), st.text("abc ", min_size=1, max_size=20)),
    min_size=1,
    max_size=5,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(series=series_strategy)
def test_apply_then_refresh_reproduces_patches(tmp_path_factory, series):
    tmp = tmp_path_factory.mktemp("prop")
    root = make_root(tmp, {f: lines(40, f) for f in FILES})
    state = {f: lines(40, f).splitlines(keepends=True) for f in FILES}
    series = sorted(series, key=lambda s: model.TIERS.index(s[1]))
    for n, (edits, tier, words) in enumerate(series):
        changes = {}
        for path, action in edits:
            if action is None:
                if path in state:
                    del state[path]
                    changes[path] = None
                continue
            content = state.setdefault(path, [])
            for at, text in action:
                if content and at % 3 == 0:
                    content[at % len(content)] = text + "\n"
                elif content and at % 3 == 1:
                    del content[at % len(content)]
                else:
                    content.insert(at % (len(content) + 1), text + "\n")
            changes[path] = "".join(content)
        if not any(v is not None or k for k, v in changes.items()):
            continue
        commit_change(root, f"patch {n}: {words.strip() or 'x'}", changes, tier=tier, when=1_750_000_000 + n)
    stack.refresh(root, progress=quiet)
    before = snapshot(root)
    reset_upstream(root)
    stack.apply(root, progress=quiet)
    assert stack.refresh(root, progress=quiet).changed == []
    assert snapshot(root) == before
    again = stack.apply(root, progress=quiet)
    assert all(o.state == stack.ALREADY for o in again.outcomes)
    shutil.rmtree(tmp)
