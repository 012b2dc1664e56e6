"""Which files decide an image: the Dockerfile's COPY and ADD sources."""

from __future__ import annotations

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.images import build_digest, copied_sources, input_files, read_ca_certificates


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


def test_ca_certificates_are_read_recursively_in_path_order(tmp_path):
    (tmp_path / "b.crt").write_text("B\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.crt").write_text("A\n")
    (tmp_path / "a.crt").write_text("first\n")
    (tmp_path / "notes.txt").write_text("not a certificate")
    # The text the images role passed before the module read the files itself (find, sort, join): same digest.
    assert read_ca_certificates(str(tmp_path)) == "first\n\nB\n\nA\n"
    assert read_ca_certificates(str(tmp_path / "missing")) == ""


def test_an_unreadable_ca_certificate_is_a_one_line_error(tmp_path):
    (tmp_path / "broken.crt").symlink_to(tmp_path / "nowhere.crt")
    with pytest.raises(Hal9000Error) as err:
        read_ca_certificates(str(tmp_path))
    assert "broken.crt" in str(err.value) and "\n" not in str(err.value)
