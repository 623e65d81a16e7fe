"""File name → language name, the vocabulary every later layer keys on."""

from __future__ import annotations

from pathlib import PurePosixPath

# The names later layers depend on: python, javascript, typescript, tsx, java, go, rust, c, cpp,
# markdown, rst, asciidoc; the rest only label files for metadata.
EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "tsx",
    ".java": "java",
    ".go": "go",
    ".rs": "rust",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown",
    ".rst": "rst", ".rest": "rst",
    ".adoc": "asciidoc", ".asciidoc": "asciidoc", ".asc": "asciidoc",
    ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell",
    ".html": "html", ".htm": "html", ".css": "css", ".scss": "css",
    ".sql": "sql", ".rb": "ruby", ".php": "php", ".kt": "kotlin", ".swift": "swift", ".cs": "csharp",
    ".txt": "text",
}

FILENAMES: dict[str, str] = {
    "Makefile": "make", "GNUmakefile": "make", "Dockerfile": "dockerfile", "CMakeLists.txt": "cmake",
    "README": "text", "LICENSE": "text", "CHANGELOG": "text",
}

DOC_LANGUAGES = frozenset({"markdown", "rst", "asciidoc"})

# Extensions of formats that are binary even when a sample of their bytes has no NUL.
BINARY_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".tif", ".tiff", ".psd",
    ".pdf", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".tar", ".jar", ".war",
    ".whl", ".egg", ".so", ".dylib", ".dll", ".exe", ".o", ".a", ".lib", ".obj", ".class", ".pyc", ".pyo",
    ".woff", ".woff2", ".ttf", ".otf", ".eot", ".mp3", ".mp4", ".wav", ".ogg", ".flac", ".avi", ".mov", ".webm",
    ".sqlite", ".db", ".bin", ".dat", ".npy", ".npz", ".pt", ".pth", ".safetensors", ".gguf", ".onnx", ".pkl",
    ".parquet", ".arrow", ".xls", ".xlsx", ".doc", ".docx", ".ppt", ".pptx",
})


def language_for(path: str) -> str:
    """Language of ``path`` by file name, then extension; 'text' when unknown."""
    p = PurePosixPath(path)
    if p.name in FILENAMES:
        return FILENAMES[p.name]
    return EXTENSIONS.get(p.suffix.lower(), "text")


def is_doc_language(language: str) -> bool:
    return language in DOC_LANGUAGES


def has_binary_extension(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in BINARY_EXTENSIONS
