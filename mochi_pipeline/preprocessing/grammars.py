"""Tree-sitter grammars (from the per-language wheels) and the syntax each chunker needs to know.

``parser_for(language)`` returns a cached ``tree_sitter.Parser``; ``SPECS`` says, per language,
which node types define functions, class-like scopes, wrappers (decorators, ``export``,
``template``), imports and comments. Grammars are loaded lazily, so importing this module is cheap
and a missing wheel only affects its own language.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache

from tree_sitter import Language, Node, Parser


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    module: str
    loader: str = "language"
    functions: frozenset[str] = frozenset()
    classes: frozenset[str] = frozenset()
    wrappers: frozenset[str] = frozenset()
    imports: frozenset[str] = frozenset()
    comments: frozenset[str] = frozenset({"comment"})
    # ``const f = () => {...}``: a variable declaration whose value is one of these defines a function.
    function_values: frozenset[str] = frozenset()
    comment_prefix: str = "//"


_JS_FUNCS = frozenset({"function_declaration", "generator_function_declaration", "method_definition"})
_JS_CLASSES = frozenset({"class_declaration", "class"})
_JS_VALUES = frozenset({"arrow_function", "function_expression", "function", "generator_function"})
_TS_CLASSES = _JS_CLASSES | {"abstract_class_declaration", "interface_declaration", "enum_declaration", "module",
                             "internal_module"}
_TS_FUNCS = _JS_FUNCS | {"function_signature", "method_signature", "abstract_method_signature"}

SPECS: dict[str, LanguageSpec] = {
    "python": LanguageSpec(
        "python", "tree_sitter_python",
        functions=frozenset({"function_definition"}),
        classes=frozenset({"class_definition"}),
        wrappers=frozenset({"decorated_definition"}),
        imports=frozenset({"import_statement", "import_from_statement", "future_import_statement"}),
        comment_prefix="#",
    ),
    "javascript": LanguageSpec(
        "javascript", "tree_sitter_javascript",
        functions=_JS_FUNCS, classes=_JS_CLASSES, wrappers=frozenset({"export_statement"}),
        imports=frozenset({"import_statement"}), function_values=_JS_VALUES,
    ),
    "typescript": LanguageSpec(
        "typescript", "tree_sitter_typescript", loader="language_typescript",
        functions=_TS_FUNCS, classes=_TS_CLASSES, wrappers=frozenset({"export_statement"}),
        imports=frozenset({"import_statement"}), function_values=_JS_VALUES,
    ),
    "tsx": LanguageSpec(
        "tsx", "tree_sitter_typescript", loader="language_tsx",
        functions=_TS_FUNCS, classes=_TS_CLASSES, wrappers=frozenset({"export_statement"}),
        imports=frozenset({"import_statement"}), function_values=_JS_VALUES,
    ),
    "java": LanguageSpec(
        "java", "tree_sitter_java",
        functions=frozenset({"method_declaration", "constructor_declaration", "compact_constructor_declaration"}),
        classes=frozenset({"class_declaration", "interface_declaration", "enum_declaration", "record_declaration",
                           "annotation_type_declaration"}),
        imports=frozenset({"import_declaration"}),
        comments=frozenset({"line_comment", "block_comment"}),
    ),
    "go": LanguageSpec(
        "go", "tree_sitter_go",
        functions=frozenset({"function_declaration", "method_declaration"}),
        classes=frozenset({"type_declaration"}),
        imports=frozenset({"import_declaration"}),
    ),
    "rust": LanguageSpec(
        "rust", "tree_sitter_rust",
        functions=frozenset({"function_item", "function_signature_item"}),
        classes=frozenset({"impl_item", "trait_item", "struct_item", "enum_item", "union_item", "mod_item"}),
        imports=frozenset({"use_declaration"}),
        comments=frozenset({"line_comment", "block_comment"}),
    ),
    "c": LanguageSpec(
        "c", "tree_sitter_c",
        functions=frozenset({"function_definition"}),
        imports=frozenset({"preproc_include"}),
    ),
    "cpp": LanguageSpec(
        "cpp", "tree_sitter_cpp",
        functions=frozenset({"function_definition"}),
        classes=frozenset({"class_specifier", "struct_specifier", "union_specifier", "namespace_definition"}),
        wrappers=frozenset({"template_declaration"}),
        imports=frozenset({"preproc_include", "using_declaration"}),
    ),
}


def supported_languages() -> list[str]:
    return sorted(SPECS)


@cache
def language_for(name: str) -> Language:
    spec = SPECS[name]
    module = importlib.import_module(spec.module)
    return Language(getattr(module, spec.loader)())


def parser_for(name: str) -> Parser | None:
    """A parser for ``name``, or None when mochi has no grammar for it (callers fall back to windows)."""
    if name not in SPECS:
        return None
    return _parser(name)


@cache
def _parser(name: str) -> Parser:
    return Parser(language_for(name))


# --- naming definitions ------------------------------------------------------------------------


def _text(node: Node | None) -> str:
    return node.text.decode("utf-8", "replace") if node is not None and node.text is not None else ""


def _c_declarator_name(node: Node | None) -> str:
    """Walk C/C++ declarators (pointer, reference, function) down to the declared name."""
    while node is not None:
        if node.type in {"identifier", "field_identifier", "qualified_identifier", "destructor_name",
                         "operator_name", "type_identifier"}:
            return _text(node).replace("::", ".")
        inner = node.child_by_field_name("declarator")
        if inner is None:
            inner = next((c for c in node.named_children if "declarator" in c.type or c.type.endswith("identifier")),
                         None)
        node = inner
    return ""


def _go_receiver_type(node: Node) -> str:
    receiver = node.child_by_field_name("receiver")
    for ident in _descendants(receiver):
        if ident.type == "type_identifier":
            return _text(ident)
    return ""


def _descendants(node: Node | None):
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.named_children))


def definition_name(spec: LanguageSpec, node: Node) -> str:
    """The (possibly partly qualified) name a definition node declares, '' if anonymous."""
    if spec.name in {"c", "cpp"} and node.type == "function_definition":
        return _c_declarator_name(node.child_by_field_name("declarator"))
    if spec.name == "go":
        if node.type == "method_declaration":
            owner = _go_receiver_type(node)
            name = _text(node.child_by_field_name("name"))
            return f"{owner}.{name}" if owner else name
        if node.type == "type_declaration":
            spec_node = next((c for c in node.named_children if c.type in {"type_spec", "type_alias"}), None)
            return _text(spec_node.child_by_field_name("name")) if spec_node is not None else ""
    if spec.name == "rust" and node.type == "impl_item":
        return _text(node.child_by_field_name("type"))
    name = node.child_by_field_name("name")
    return _text(name)


def unwrap(spec: LanguageSpec, node: Node) -> Node:
    """The definition inside a wrapper (decorators, ``export``, ``template<...>``), else the node."""
    while node.type in spec.wrappers:
        inner = node.child_by_field_name("definition") or node.child_by_field_name("declaration")
        if inner is None:
            inner = next((c for c in reversed(node.named_children)
                          if c.type in spec.functions or c.type in spec.classes or c.type in spec.wrappers), None)
        if inner is None:
            return node
        node = inner
    return node


def function_value_name(spec: LanguageSpec, node: Node) -> str:
    """For ``const f = () => ...``: the variable name, '' when the declaration defines no function."""
    if not spec.function_values or node.type not in {"lexical_declaration", "variable_declaration"}:
        return ""
    declarators = [c for c in node.named_children if c.type == "variable_declarator"]
    if len(declarators) != 1:
        return ""
    value = declarators[0].child_by_field_name("value")
    if value is None or value.type not in spec.function_values:
        return ""
    return _text(declarators[0].child_by_field_name("name"))


def body_of(node: Node) -> Node | None:
    """The node holding a class-like scope's members (class body, impl block, namespace body)."""
    body = node.child_by_field_name("body")
    if body is not None:
        return body
    return next((c for c in node.named_children
                 if c.type in {"declaration_list", "field_declaration_list", "class_body", "enum_body"}), None)
