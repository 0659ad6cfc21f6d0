"""Our own exception types. Core code raises these; only the CLI (and later
the TUI) turns them into messages and exit codes."""


from edge_search.display import printable


class EdgeSearchError(Exception):
    """Base class: the message is one line meant for a person.

    File names, catalog cells and archive member names can hold newlines and
    other control characters; they are shown escaped, so a message stays one
    line whatever the input was."""

    exit_code = 2

    def __str__(self) -> str:
        return printable(super().__str__())


class FileError(EdgeSearchError):
    """A path cannot be read or written as asked (a FIFO, a full disk, a folder we may not write)."""


class ImageError(EdgeSearchError):
    """An image file is missing, empty, or cannot be decoded."""


class BundleError(EdgeSearchError):
    """A bundle is missing files, fails verification, or has an unknown schema."""


class ManifestError(BundleError):
    """A manifest field is missing, of the wrong type or out of range; the message names the field."""

    def __init__(self, where: str, detail: str):
        self.where, self.detail = where, detail  # detail: the field and its problem, without the file
        super().__init__(f"{where}: {detail}")


class QueryError(EdgeSearchError):
    """A query setting is out of range (k below 1, a min_score that is NaN or +inf, alpha outside 0..1).

    `setting` is its name in the Python API ("k", "min_score", "alpha"); the
    CLI shows its own flag instead (`named`)."""

    def __init__(self, setting: str, problem: str):
        self.setting, self.problem = setting, problem
        super().__init__(f"{setting} {problem}")

    def named(self, name: str) -> "QueryError":
        """The same problem, told with another name for the setting (a CLI flag)."""
        return QueryError(name, self.problem)


class TextQueryError(EdgeSearchError):
    """A query by words cannot be answered (empty words, a bundle without a text model)."""


class FilterError(EdgeSearchError):
    """A --filter expression is malformed or names a field no product has."""


class SignatureError(BundleError):
    """A bundle is unsigned, signed by another key, or its manifest changed after signing."""


class TrustError(EdgeSearchError):
    """A key file is missing, unreadable or not an Ed25519 key of the right kind."""


class InstallError(EdgeSearchError):
    """A packed bundle is malformed or unsafe, or an install/rollback cannot proceed."""


class CatalogError(EdgeSearchError):
    """A catalog file or its rows are unusable."""


class ExportError(EdgeSearchError):
    """The export could not run (bad settings, missing weights, output exists)."""


class GateError(ExportError):
    """A fidelity gate failed: the measured value missed its threshold."""

    def __init__(self, gate: str, measured: float, threshold: float, detail: str = ""):
        self.gate, self.measured, self.threshold = gate, measured, threshold
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"fidelity gate '{gate}' failed: measured {measured:.4f}, threshold {threshold:.4f}{extra}"
        )


class WeightsUnavailable(ExportError):
    """Pretrained weights cannot be had here (offline and not cached)."""
