"""Storm's Java programs, run from a folder of jars (`dev/storm/service install` fills
`.run/storm/lib` from Maven Central), without the Storm tarball or its `storm` script.

Their logging goes to one file (the system property `threadcast.storm.log.file`) through
`log4j2.xml` next to this module, which keeps Storm's own INFO lines out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

LOG_CONFIG = Path(__file__).with_name("log4j2.xml")
INSTALL_HINT = "dev/storm/service install"


def find_jar(lib_dir: Path, artifact: str) -> Path:
    """The jar of `artifact` (such as flux-core) in `lib_dir`, the newest if several."""
    jars = sorted(lib_dir.glob(f"{artifact}-[0-9]*.jar"))
    if not jars:
        raise FileNotFoundError(f"no {artifact} jar in {lib_dir} (run: {INSTALL_HINT})")
    return jars[-1]


def java_command(
    lib_dir: Path,
    main: str,
    args: Sequence[str],
    *,
    heap_mb: int,
    props: Mapping[str, str],
    log_file: Path | None = None,
) -> list[str]:
    """`java` running `main` with every jar of `lib_dir` on the classpath."""
    props = {"log4j2.configurationFile": str(LOG_CONFIG), **props}
    if log_file is not None:
        props["threadcast.storm.log.file"] = str(log_file)
    return [
        "java",
        f"-Xmx{heap_mb}m",
        "-XX:+UseSerialGC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        *(f"-D{key}={value}" for key, value in props.items()),
        "-cp",
        f"{lib_dir}/*",
        main,
        *args,
    ]
