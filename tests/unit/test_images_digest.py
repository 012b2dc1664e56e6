"""Which files decide an image: the Dockerfile's COPY and ADD sources."""

from __future__ import annotations

from ansible_collections.hal9000.dind.plugins.module_utils.images import build_digest, copied_sources, input_files


def test_copied_sources_skip_other_stages_and_urls():
    text = (
        "FROM x AS b\nCOPY --chown=1:1 images/a.sh ./images/dir/ /dst/\n"
        "COPY --from=b /out /out\nADD https://example.invalid/f /f\n"
        "RUN echo COPY nothing \\\n  && true\nadd images/*.conf /etc/\n"
    )
    assert copied_sources(text) == ["images/a.sh", "images/dir", "images/*.conf"]


def test_only_copied_files_are_inputs(tmp_path):
    (tmp_path / "images" / "dir").mkdir(parents=True)
    (tmp_path / "images" / "Dockerfile").write_text("FROM x\nCOPY images/dir/ /d/\n")
    (tmp_path / "images" / "dir" / "kept").write_text("1")
    (tmp_path / "images" / "other").write_text("1")
    assert input_files(str(tmp_path), "images/Dockerfile") == ["images/Dockerfile", "images/dir/kept"]
    before = build_digest(str(tmp_path), "images/Dockerfile", {}, "sha256:base")
    (tmp_path / "images" / "other").write_text("2")
    assert build_digest(str(tmp_path), "images/Dockerfile", {}, "sha256:base") == before
    (tmp_path / "images" / "dir" / "kept").write_text("2")
    assert build_digest(str(tmp_path), "images/Dockerfile", {}, "sha256:base") != before
    assert build_digest(str(tmp_path), "images/Dockerfile", {"A": "1"}, "sha256:base") != before
    assert build_digest(str(tmp_path), "images/Dockerfile", {}, "sha256:other") != before


def test_dockerignore_still_applies(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "Dockerfile").write_text("FROM x\nCOPY . /src/\n")
    (tmp_path / "images" / "a").write_text("1")
    (tmp_path / "secret").write_text("1")
    (tmp_path / ".dockerignore").write_text("secret\n")
    assert input_files(str(tmp_path), "images/Dockerfile") == ["images/Dockerfile", ".dockerignore", "images/a"]
