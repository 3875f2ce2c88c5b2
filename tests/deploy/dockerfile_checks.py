"""A small Dockerfile / .dockerignore reader and the static checks the images must pass.

There is no Docker engine on our machines, so the images are checked as text:

* every base image is pinned (a digest, or a tag that names a version and is not ``latest``);
* the final stage runs as a non-root user, said explicitly;
* no ``ENV``/``ARG``/``LABEL`` carries a secret and no ``COPY``/``ADD`` copies a key or token;
* ``.dockerignore`` keeps ``.git``, ``.venv``, results and secrets out of the build context;
* every ``COPY`` source exists in the repository and survives ``.dockerignore``;
* an image meant to be torch-free installs no torch (directly, through a requirements file
  or through morphtune's own dependencies).

Each check returns a list of problems (empty: it passes); each problem names the file, the
line, the instruction and the rule it breaks.

The parser follows the Dockerfile reference: parser directives, comments, ``\\`` line
continuations (or the ``escape`` directive's character), JSON (exec) and shell forms,
heredocs (``<<EOF`` bodies are kept with their instruction), ``ARG`` defaults substituted
into ``FROM``/``COPY``/``USER``/``ENV``. ``.dockerignore`` patterns follow Docker's rules
(github.com/moby/patternmatcher): ``*`` and ``?`` stop at ``/``, ``**`` spans directories, a
pattern that matches a parent directory matches everything below it, ``!`` re-includes, and
the last matching line wins.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = [
    "DockerIgnore",
    "Dockerfile",
    "Instruction",
    "Stage",
    "check_base_images_pinned",
    "check_copy_sources",
    "check_dockerignore_excludes",
    "check_final_user_non_root",
    "check_no_baked_secrets",
    "check_no_torch",
    "parse_dockerfile",
    "requirement_name",
]

_DIRECTIVE = re.compile(r"#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$")
_HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VARIABLE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-+][^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))"
)
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_VERSION = re.compile(r"\d+\.\d+")
_SECRET_WORDS = frozenset(
    {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "APIKEY", "CREDENTIAL", "CREDENTIALS"}
)
#: Basename patterns of files that hold keys, tokens or credentials.
SECRET_FILE_PATTERNS = (
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*token*",
    "*secret*",
    "*credential*",
    "id_rsa*",
    "id_ed25519*",
    ".env",
    ".env.*",
    "*.kubeconfig",
    "kubeconfig",
    ".netrc",
)
TORCH_DISTRIBUTIONS = frozenset({"torch", "torchvision", "torchaudio", "pytorch", "pytorch-cpu"})
#: Generated files that are expected to stay out of the build context.
GENERATED_PARTS = ("__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache")
GENERATED_SUFFIXES = (".pyc", ".pyo", ".egg-info")


# --------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case), its text after the keyword, its line."""

    keyword: str
    text: str
    line: int
    heredocs: tuple[str, ...] = ()

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """Leading ``--flag=value`` options and the text after them."""
        flags: dict[str, str] = {}
        rest = self.text.strip()
        while rest.startswith("--"):
            word, _, rest = rest.partition(" ")
            name, _, value = word[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        return flags, rest

    def flags_and_args(self) -> tuple[dict[str, str], list[str]]:
        """Leading ``--flag=value`` options, then the arguments (JSON form or words)."""
        flags, rest = self.flags_and_rest()
        if rest.startswith("["):
            try:
                parsed = json.loads(rest)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
                return flags, list(parsed)
        return flags, shlex.split(rest, posix=True) if rest else []


@dataclass
class Stage:
    """One ``FROM`` and the instructions after it; ``args`` are the ARG values in scope."""

    index: int
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)


@dataclass
class Dockerfile:
    path: str
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def where(self, instruction: Instruction) -> str:
        return f"{self.path}:{instruction.line}: {instruction.keyword}"


def _logical_lines(text: str) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(first line number, joined instruction text, heredoc bodies) per instruction."""
    lines = text.splitlines()
    escape = "\\"
    index = 0
    # Parser directives: only at the very top, before any comment, blank line or instruction.
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        if not match:
            break
        if match.group(1).lower() == "escape":
            escape = match.group(2)
        index += 1
    while index < len(lines):
        raw = lines[index]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        start = index + 1
        parts: list[str] = []
        line = raw
        while True:
            body = line.rstrip()
            if body.endswith(escape):
                parts.append(body[: -len(escape)])
                index += 1
                # Comment lines inside a continuation are dropped, as Docker does.
                while index < len(lines) and lines[index].strip().startswith("#"):
                    index += 1
                if index >= len(lines):
                    break
                line = lines[index]
                continue
            parts.append(body)
            index += 1
            break
        joined = " ".join(part.strip() for part in parts)
        heredocs: list[str] = []
        for match in _HEREDOC.finditer(joined):
            terminator = match.group(3)
            content: list[str] = []
            while index < len(lines):
                candidate = lines[index]
                index += 1
                if candidate.strip() == terminator:
                    break
                content.append(candidate)
            heredocs.append("\n".join(content))
        yield start, joined, tuple(heredocs)


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``$NAME``/``${NAME}`` replaced by ``values`` (unknown names left as they are)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return _VARIABLE.sub(replace, text)


def _arg_assignments(instruction: Instruction) -> list[tuple[str, str | None]]:
    result: list[tuple[str, str | None]] = []
    for word in shlex.split(instruction.text, posix=True):
        name, equals, value = word.partition("=")
        result.append((name, value if equals else None))
    return result


def env_assignments(instruction: Instruction) -> list[tuple[str, str]]:
    """``ENV``/``LABEL`` key-value pairs (``KEY=VALUE ...`` or the legacy ``KEY VALUE``)."""
    words = shlex.split(instruction.text, posix=True)
    if words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    pairs = []
    for word in words:
        key, _, value = word.partition("=")
        pairs.append((key, value))
    return pairs


def parse_dockerfile(text: str, path: str = "Dockerfile") -> Dockerfile:
    """Parse ``text``; raises ``ValueError`` naming the line for what Docker would refuse."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, joined, heredocs in _logical_lines(text):
        keyword, _, rest = joined.partition(" ")
        instruction = Instruction(keyword.upper(), rest.strip(), line, heredocs)
        if instruction.keyword == "FROM":
            _flags, words = instruction.flags_and_args()
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
                raise ValueError(f"{path}:{line}: FROM must be 'FROM image [AS name]'")
            name = words[2] if len(words) == 3 else None
            stage = Stage(len(stages), words[0], name, line, args={})
            stages.append(stage)
            continue
        if not stages:
            if instruction.keyword != "ARG":
                raise ValueError(f"{path}:{line}: only ARG may come before the first FROM")
            for name, value in _arg_assignments(instruction):
                global_args[name] = value or ""
            continue
        stage = stages[-1]
        stage.instructions.append(instruction)
        if instruction.keyword == "ARG":
            for name, value in _arg_assignments(instruction):
                if value is not None:
                    stage.args[name] = substitute(value, stage.args)
                elif name in global_args:  # re-declared global ARG: its default comes along
                    stage.args[name] = global_args[name]
    if not stages:
        raise ValueError(f"{path}: no FROM instruction")
    return Dockerfile(path, global_args, stages)


def load_dockerfile(path: Path, root: Path | None = None) -> Dockerfile:
    shown = str(path.relative_to(root)) if root is not None else str(path)
    return parse_dockerfile(path.read_text(encoding="utf-8"), shown)


# ------------------------------------------------------------------------- .dockerignore


@dataclass(frozen=True)
class _Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]
    depth: int


def _compile(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            index += 2
            if index < len(pattern) and pattern[index] == "/":
                index += 1
                out.append("(.*/)?")
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end < 0:
                raise ValueError(f".dockerignore: unterminated '[' in pattern {pattern!r}")
            out.append(pattern[index : end + 1])  # Go's classes: [abc], [a-z], [^abc]
            index = end
        elif char == "\\" and index + 1 < len(pattern):
            index += 1
            out.append(re.escape(pattern[index]))
        else:
            out.append(re.escape(char))
        index += 1
    out.append("$")
    return re.compile("".join(out))


def _clean(path: str) -> str:
    cleaned = str(PurePosixPath("/" + path.strip()))
    return cleaned.lstrip("/") or "."


class DockerIgnore:
    """The patterns of a ``.dockerignore`` and Docker's rule for whether a path is left out."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in lines:
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            exclusion = text.startswith("!")
            if exclusion:
                text = text[1:].strip()
                if not text:
                    raise ValueError(".dockerignore: a lone '!' is not a pattern")
            cleaned = _clean(text)
            self.patterns.append(
                _Pattern(cleaned, exclusion, _compile(cleaned), len(cleaned.split("/")))
            )

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        return cls(path.read_text(encoding="utf-8").splitlines()) if path.exists() else cls([])

    def excluded(self, path: str) -> bool:
        """True when ``path`` (relative to the context, ``/``-separated) is left out."""
        cleaned = _clean(path)
        if cleaned == ".":
            return False
        parents = cleaned.split("/")[:-1]
        prefixes = ["/".join(parents[: count + 1]) for count in range(len(parents))]
        matched = False
        for pattern in self.patterns:
            hit = bool(pattern.regex.match(cleaned)) or any(
                pattern.regex.match(prefix) for prefix in prefixes
            )
            if hit:
                matched = not pattern.exclusion
        return matched


# --------------------------------------------------------------------------------- checks


def check_base_images_pinned(dockerfile: Dockerfile) -> list[str]:
    """Every external base image: a ``@sha256:`` digest, or a versioned tag that isn't latest."""
    problems = []
    stage_names = {stage.name.lower() for stage in dockerfile.stages if stage.name}
    for stage in dockerfile.stages:
        image = substitute(stage.base, dockerfile.global_args)
        where = f"{dockerfile.path}:{stage.line}: FROM {stage.base}"
        if "$" in image:
            problems.append(f"{where}: the base image uses an ARG without a default")
            continue
        if image.lower() in stage_names or image == "scratch":
            continue
        if _DIGEST.search(image):
            continue
        last = image.rsplit("/", 1)[-1]
        tag = last.partition(":")[2] if ":" in last else ""
        if not tag:
            problems.append(f"{where}: the base image has no tag (pin a version or a digest)")
        elif tag == "latest" or not _VERSION.search(tag):
            problems.append(
                f"{where}: tag {tag!r} names no version (pin e.g. 'name:1.2.3' or a digest)"
            )
    return problems


def _user_of(instruction: Instruction, args: Mapping[str, str]) -> str:
    return substitute(instruction.text.strip(), args).split(":", 1)[0].strip()


def check_final_user_non_root(dockerfile: Dockerfile) -> list[str]:
    """The final stage's last ``USER`` exists and is neither ``root`` nor uid 0."""
    final = dockerfile.final
    users = [item for item in final.instructions if item.keyword == "USER"]
    if not users:
        return [
            f"{dockerfile.path}:{final.line}: the final stage (FROM {final.base}) sets no USER:"
            " say the non-root user explicitly"
        ]
    last = users[-1]
    user = _user_of(last, final.args)
    if user in ("", "root", "0") or "$" in user:
        return [f"{dockerfile.where(last)} {last.text}: the image would run as root ({user!r})"]
    return []


def _is_secret_name(name: str) -> bool:
    words = re.split(r"[^A-Za-z0-9]+", name.upper())
    return any(word in _SECRET_WORDS for word in words)


def is_secret_file(path: str) -> bool:
    base = PurePosixPath(path).name.lower()
    return any(fnmatch.fnmatchcase(base, pattern) for pattern in SECRET_FILE_PATTERNS)


def _copy_sources(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    flags, words = instruction.flags_and_args()
    if instruction.heredocs:  # COPY <<EOF /dest: inline content, no source files
        return flags, [], words[-1] if words else ""
    if len(words) < 2:
        return flags, [], ""
    return flags, words[:-1], words[-1]


def check_no_baked_secrets(dockerfile: Dockerfile) -> list[str]:
    """No secret-named ENV/LABEL with a value or ARG at all; no key/token file copied."""
    problems = []
    for stage in dockerfile.stages:
        for item in stage.instructions:
            where = dockerfile.where(item)
            if item.keyword in ("ENV", "LABEL"):
                for key, value in env_assignments(item):
                    if _is_secret_name(key) and value.strip():
                        problems.append(
                            f"{where} {key}: a secret-like name with a value is baked into"
                            " the image (inject it at run time from a Secret)"
                        )
            elif item.keyword == "ARG":
                for key, _value in _arg_assignments(item):
                    if _is_secret_name(key):
                        problems.append(
                            f"{where} {key}: build arguments are recorded in the image history;"
                            " pass secrets with RUN --mount=type=secret"
                        )
            elif item.keyword in ("COPY", "ADD"):
                _flags, sources, _dest = _copy_sources(item)
                for source in sources:
                    if is_secret_file(substitute(source, stage.args)):
                        problems.append(
                            f"{where} {source}: copies a key, token or credentials file into"
                            " the image"
                        )
    for name in dockerfile.global_args:
        if _is_secret_name(name):
            problems.append(
                f"{dockerfile.path}: ARG {name}: build arguments are recorded in the image"
                " history; pass secrets with RUN --mount=type=secret"
            )
    return problems


#: Paths .dockerignore must leave out: (example path, what it stands for).
MUST_EXCLUDE = (
    (".git/config", "the git directory"),
    (".venv/bin/python", "the virtual environment"),
    ("morphtune-results/demo/manifest.json", "local results"),
    ("results/run/part-0.parquet", "local results"),
    (".pytest_cache/v/cache/lastfailed", "test caches"),
    ("src/morphtune/__pycache__/cli.cpython-311.pyc", "bytecode caches"),
    ("tls.key", "private keys"),
    ("deploy/certs/server.pem", "certificates and keys"),
    ("ray-token.txt", "tokens"),
    ("k8s/overlays/prod/tokens.txt", "tokens"),
    ("secrets/object-store.yaml", "secrets"),
    (".env", "environment files"),
)


def check_dockerignore_excludes(
    ignore: DockerIgnore, must_exclude: Sequence[tuple[str, str]] = MUST_EXCLUDE
) -> list[str]:
    return [
        f".dockerignore: {path!r} ({why}) would be sent to the build context"
        for path, why in must_exclude
        if not ignore.excluded(path)
    ]


def _is_generated(relative: PurePosixPath) -> bool:
    return any(
        part in GENERATED_PARTS or part.endswith(GENERATED_SUFFIXES) for part in relative.parts
    )


def _context_files(root: Path, source: str) -> list[PurePosixPath]:
    """Repository paths a COPY source names (globs expanded), relative to the context."""
    source = source.lstrip("/")
    if source in ("", "."):
        return [PurePosixPath(".")]
    if any(char in source for char in "*?["):
        return sorted(PurePosixPath(p.relative_to(root).as_posix()) for p in root.glob(source))
    path = root / source
    return [PurePosixPath(source.rstrip("/"))] if path.exists() else []


def check_copy_sources(dockerfile: Dockerfile, root: Path, ignore: DockerIgnore) -> list[str]:
    """Every COPY/ADD from the build context names something that exists and is sent.

    For a directory, every file below it must be sent too, except generated caches: a
    ``.dockerignore`` line that silently drops part of the package is a broken image.
    """
    problems = []
    for stage in dockerfile.stages:
        for item in stage.instructions:
            if item.keyword not in ("COPY", "ADD"):
                continue
            flags, sources, _dest = _copy_sources(item)
            if "from" in flags:
                continue
            where = dockerfile.where(item)
            for raw in sources:
                source = substitute(raw, stage.args)
                if re.match(r"^[a-z]+://", source) or source.startswith("git@"):
                    problems.append(
                        f"{where} {raw}: fetches a URL; vendor it or RUN a pinned fetch"
                    )
                    continue
                matches = _context_files(root, source)
                if not matches:
                    problems.append(f"{where} {raw}: no such file or directory in the repository")
                    continue
                for relative in matches:
                    problems.extend(_context_problems(where, raw, root, relative, ignore))
    return problems


def _context_problems(
    where: str, raw: str, root: Path, relative: PurePosixPath, ignore: DockerIgnore
) -> list[str]:
    if ignore.excluded(relative.as_posix()):
        return [f"{where} {raw}: {relative} is excluded by .dockerignore"]
    path = root / relative
    if not path.is_dir():
        return []
    problems = []
    for file in sorted(path.rglob("*")):
        inside = PurePosixPath(file.relative_to(root).as_posix())
        if file.is_dir() or _is_generated(inside):
            continue
        if ignore.excluded(inside.as_posix()):
            problems.append(f"{where} {raw}: {inside} is excluded by .dockerignore")
    return problems


# ------------------------------------------------------------------------------ no torch


_SEPARATORS = re.compile(r"&&|\|\||;|\n|\|")


def requirement_name(text: str) -> str:
    """The canonical distribution name of a requirement line or wheel file name ('' if none)."""
    text = text.strip()
    base = PurePosixPath(text).name
    if base.endswith(".whl"):
        return base.split("-", 1)[0].lower().replace("_", "-")
    match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", text)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def _pip_installs(stage: Stage) -> Iterator[tuple[Instruction, list[str]]]:
    """(RUN instruction, pip arguments after 'install') for each pip install command."""
    for item in stage.instructions:
        if item.keyword != "RUN":
            continue
        _flags, text = item.flags_and_rest()
        if text.startswith("["):
            try:
                text = " ".join(shlex.quote(word) for word in json.loads(text))
            except json.JSONDecodeError:
                pass
        text = "\n".join([text, *item.heredocs])
        for command in _SEPARATORS.split(substitute(text, stage.args)):
            try:
                words = shlex.split(command, posix=True)
            except ValueError:
                words = command.split()
            for index, word in enumerate(words[:-1]):
                if PurePosixPath(word).name.startswith("pip") and words[index + 1] == "install":
                    yield item, words[index + 2 :]
                    break


def _requirement_files(stage: Stage, root: Path) -> dict[str, Path]:
    """Image path -> repository file, for files this stage COPYs from the context."""
    mapping: dict[str, Path] = {}
    for item in stage.instructions:
        if item.keyword != "COPY":
            continue
        flags, sources, dest = _copy_sources(item)
        if "from" in flags or not dest:
            continue
        for source in sources:
            source = substitute(source, stage.args).lstrip("/")
            name = PurePosixPath(source).name
            target = (
                PurePosixPath(dest) / name
                if dest.endswith("/") or len(sources) > 1
                else PurePosixPath(dest)
            )
            mapping[str(target)] = root / source
    return mapping


def _lines_of(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        text = raw.split("#", 1)[0].strip()
        if text:
            lines.append(text)
    return lines


#: pip options followed by a value (``--index-url URL``), so the value is no package.
_PIP_VALUE_OPTIONS = frozenset(
    {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-t", "--target"}
    | {"--prefix", "--root", "--python", "--platform", "-c", "--constraint"}
)


def check_no_torch(dockerfile: Dockerfile, root: Path, project: str = "morphtune") -> list[str]:
    """No pip install in any stage brings torch: not by name, not through a requirements
    file copied from the repository, not through ``project``'s own dependencies (which
    include torch: a local wheel, directory or ``project`` requirement needs --no-deps)."""
    problems: list[str] = []
    for stage in dockerfile.stages:
        files = _requirement_files(stage, root)
        for item, args in _pip_installs(stage):
            where = dockerfile.where(item)
            no_deps = "--no-deps" in args
            for package in _pip_packages(args, where, files, problems):
                name = requirement_name(package)
                local = package.startswith(("/", ".")) or package.endswith(".whl")
                if name in TORCH_DISTRIBUTIONS:
                    problems.append(
                        f"{where}: installs {package!r} (the image must not hold torch)"
                    )
                elif (local or name == project) and not no_deps:
                    problems.append(
                        f"{where}: installs {package!r} with its dependencies, which include"
                        " torch: use --no-deps and list the runtime dependencies"
                    )
    return problems


def _pip_packages(
    args: Sequence[str], where: str, files: Mapping[str, Path], problems: list[str]
) -> list[str]:
    """What ``pip install ARGS`` installs: its arguments and its ``-r`` files' lines."""
    packages: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        if word in ("-r", "--requirement"):
            target = args[index + 1] if index + 1 < len(args) else ""
            packages.extend(_requirements_from(where, target, files, problems))
            index += 2
        elif word.startswith("-"):
            index += 2 if word in _PIP_VALUE_OPTIONS else 1
        else:
            packages.append(word)
            index += 1
    return packages


def _requirements_from(
    where: str, target: str, files: Mapping[str, Path], problems: list[str]
) -> list[str]:
    source = files.get(target)
    if source is None or not source.is_file():
        problems.append(f"{where}: -r {target}: not a file this stage copies from the repository")
        return []
    return [line for line in _lines_of(source) if not line.startswith("-")]
