"""Destination names from a template over a file's constant fields: `logs-{kubernetes.namespace}`.

Used by the Kafka sink (topic) and the Elasticsearch sink (index). Fields come from the per-file
metadata (`kubernetes.*`), so a template is resolved once per segment, not once per record. When a
field is missing or empty the fallback is used as it is.
"""

from __future__ import annotations

import re
from typing import Any

_FIELD = re.compile(r"\{([^{}]+)\}")


class FieldTemplate:
    def __init__(self, template: str, fallback: str) -> None:
        self.template = template
        self.fallback = fallback
        self.fields = [f.split(".") for f in _FIELD.findall(template)]

    def resolve(self, meta: dict[str, Any]) -> str:
        if not self.fields:
            return self.template
        values = []
        for path in self.fields:
            v: Any = meta
            for part in path:
                v = v.get(part) if isinstance(v, dict) else None
            if v is None or v == "":
                return self.fallback
            values.append(str(v))
        it = iter(values)
        return _FIELD.sub(lambda m: next(it), self.template)
