"""The base of every config model, and its JSON schema as Prefect's UI form needs it.

Every stage's config is a frozen pydantic model (``_Frozen``); the deployment form in the Prefect
UI is rendered from its JSON schema, rewritten here where Prefect's form cannot render a schema
construct, and filled from ``form_values``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["_Frozen", "form_schema", "form_values"]


class _Frozen(BaseModel):
    # NaN passes every ge/le bound (comparisons with NaN are false). allow_inf_nan=False refuses
    # NaN and infinities in every float of the model, inside dicts, tuples and unions too.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def identity(self) -> dict:
        """The settings that name this config's results (its content hash and the record's
        config): the JSON dump, unless a model leaves out what it added later at a default."""
        return self.model_dump(mode="json")

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        schema = super().__get_pydantic_json_schema__(core_schema, handler)
        form_schema(handler.resolve_ref_schema(schema), handler.resolve_ref_schema)
        return schema


def form_schema(schema: dict, resolve, _seen: set[int] | None = None) -> None:
    """Rewrite, in place, a model's JSON schema and its nested models' for Prefect's form.

    Prefect's form renders ``X | None = None`` (JSON schema ``anyOf: [X, {type: null}]``) as
    tabs whose selected "None" tab reads 'Property is type "None"'. A nullable field of a
    scalar, array, enum or mapping type that defaults to None becomes a plain ``X`` input with
    no default: empty means "not set", and Prefect's server-side validation still accepts an
    explicit null for it (``prefect.utilities.schema_tools.validation.preprocess_schema`` makes
    a non-required property without a default nullable; an enum also lists null, as a blank
    choice). Nullable nested models keep the
    tabs: an object input would fill in its fields' defaults and so set the model. Values for
    the form must leave such fields out rather than send null (``form_values``).

    Args:
        schema: a model's resolved JSON schema (with ``properties``).
        resolve: maps ``{"$ref": ...}`` to the referenced schema (pydantic's
            ``GetJsonSchemaHandler.resolve_ref_schema``), so nested models are rewritten too.
    """
    seen = set() if _seen is None else _seen
    if id(schema) in seen:
        return
    seen.add(id(schema))
    for prop in schema.get("properties", {}).values():
        branches = prop.get("anyOf") or []
        typed = [b for b in branches if b.get("type") != "null"]
        nullable = len(typed) == len(branches) - 1 == 1
        if nullable and "type" in typed[0] and prop.get("default", 0) is None:
            del prop["anyOf"], prop["default"]
            prop.update({k: v for k, v in typed[0].items() if k not in prop})
            if "enum" in prop:  # the null that validation allows must also be a choice
                prop["enum"] = [*prop["enum"], None]
        for ref in _refs(prop):
            form_schema(resolve({"$ref": ref}), resolve, seen)


def _refs(node: Any) -> list[str]:
    """Every ``$ref`` inside a JSON schema node."""
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def form_values(model: BaseModel) -> dict:
    """``model.model_dump(mode="json")`` without the fields that are None by default and unset.

    The Prefect form's values (a deployment's default parameters): ``form_schema`` types such
    a field without null, so the form's own validation would refuse a null there, while an
    absent value leaves the field to its default, as the config itself does.
    """
    out = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None and field.default is None:
            continue
        out[name] = form_values(value) if isinstance(value, BaseModel) else _jsonable(value)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: form_values(v) if isinstance(v, BaseModel) else _jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [form_values(v) if isinstance(v, BaseModel) else _jsonable(v) for v in value]
    return value
