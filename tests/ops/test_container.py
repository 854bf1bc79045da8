"""The Containerfile. No container engine runs here (``docker build`` needs a daemon, and the
base image cannot be pulled), so the image is checked without being built: hadolint lints it,
and these tests hold it to what the Kubernetes manifests and the README rely on — a pinned slim
base, a numeric non-root user equal to the Deployment's, the entrypoint ``duixwatch run -c
/etc/duixwatch/duixwatch.yaml`` (where the ConfigMap is mounted), and COPY sources that exist."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.ops_support import DEPLOY, REPO, output, run, venv_tool

CONTAINERFILE = REPO / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def deployment() -> dict[str, object]:
    path = DEPLOY / "kubernetes" / "base" / "deployment.yaml"
    loaded: dict[str, object] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


@pytest.mark.e2e
def test_hadolint_finds_nothing() -> None:
    result = run([venv_tool("hadolint"), "--failure-threshold", "info", CONTAINERFILE])
    assert result.returncode == 0, output(result)
    assert result.stdout.strip() == "", output(result)


def test_every_base_image_is_a_pinned_slim_release() -> None:
    images = [args.split()[0] for word, args in instructions() if word == "FROM"]
    assert images
    for image in images:
        if "@sha256:" in image:
            continue
        tag = image.rsplit(":", 1)[1]
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-[a-z]+", tag), f"{image}: pin an exact release"


def test_the_image_runs_as_the_deployments_numeric_non_root_user() -> None:
    users = [args for word, args in final_stage() if word == "USER"]
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "numeric, so runAsNonRoot can verify it"
    assert int(uid) != 0
    pod = deployment()["spec"]["template"]["spec"]  # type: ignore[index]
    assert int(uid) == pod["securityContext"]["runAsUser"]
    assert int(gid) == pod["securityContext"]["runAsGroup"]


def test_the_entrypoint_runs_the_daemon_on_the_config_the_deployment_mounts() -> None:
    stage = final_stage()
    entrypoint = json.loads(next(a for w, a in reversed(stage) if w == "ENTRYPOINT"))
    cmd = json.loads(next(a for w, a in reversed(stage) if w == "CMD"))
    assert [*entrypoint, *cmd] == ["duixwatch", "run", "-c", "/etc/duixwatch/duixwatch.yaml"]
    pod = deployment()["spec"]["template"]["spec"]  # type: ignore[index]
    (container,) = pod["containers"]
    assert container["args"] == cmd
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert Path(mount["mountPath"]) / "duixwatch.yaml" == Path(cmd[-1])
    # state.dir defaults to $STATE_DIRECTORY, where the Deployment mounts its emptyDir.
    state = next(m for m in container["volumeMounts"] if m["name"] == "state")
    env = " ".join(args for word, args in stage if word == "ENV").split()
    assert f"STATE_DIRECTORY={state['mountPath']}" in env


def test_every_copied_file_exists_and_the_build_installs_the_package() -> None:
    copies = [args for word, args in instructions() if word == "COPY"]
    for args in copies:
        parts = shlex.split(args)
        if any(p.startswith("--from=") for p in parts):
            continue
        for source in [p for p in parts if not p.startswith("--")][:-1]:
            assert (REPO / source).exists(), source
    copied = " ".join(copies)
    # pyproject.toml names README.md as the readme: the build needs both, and the sources.
    for needed in ("pyproject.toml", "README.md", "duixwatch/"):
        assert needed in copied, needed
    assert any("pip install" in a and " ." in a for w, a in instructions() if w == "RUN")


def test_the_manifests_and_the_readme_use_the_tag_the_containerfile_builds() -> None:
    match = re.search(r"podman build -t (\S+) -f Containerfile \.", CONTAINERFILE.read_text())
    assert match, "the Containerfile's header shows how to build it"
    name, tag = match.group(1).rsplit(":", 1)
    kustomization = yaml.safe_load((DEPLOY / "kubernetes/base/kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert (image["newName"], image["newTag"]) == (name, tag)
    assert match.group(0) in (REPO / "README.md").read_text(encoding="utf-8")
