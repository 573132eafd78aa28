"""YAML policies and price tables: a declarative schema, site+lab layering, and validation with
`file: key.path: message` lines.

A *site* file (``kind: site``) holds a cluster's defaults (Slurm partition and limits, endpoint, run root). A *lab*
file (``kind: lab``, the default) holds one lab's policy and may name its site file with ``site: PATH`` (relative to
the lab file), or inherit it from ``$FS3G_SITE_CONFIG``. Mappings merge key by key; a scalar or a list in the lab file
replaces the site's. A *price table* (``kind: pricing``, configs/pricing.yaml) holds dated prices per region for
`fs3g estimate`.

  parsers.py   value parsers: each takes the YAML value and returns the typed value or raises ValueError
  schema.py    the enums, the settings dataclasses and Policy (fields carry parser, scope and doc)
  loader.py    YAML loading bounded against alias bombs, with the line of every key path
  validate.py  a file's kind, validation of every kind, site+lab layering, cross checks, load_policy
  pricing.py   price tables: Prices, load_prices, check_price_table

The schema is the dataclasses of schema.py: every setting is a field whose metadata carries its parser, scope and
doc, so the valid keys, the defaults and the checks have a single source. Nothing here touches S3 or Slurm.
"""

from .loader import MAX_YAML_DEPTH, MAX_YAML_FILE_BYTES, MAX_YAML_NODES, YamlLimitError, read_yaml
from .parsers import MANAGED_SBATCH_OPTIONS
from .pricing import Prices, check_price_table, load_prices
from .schema import (ARCHIVED_CLASSES, TRANSITION_CLASSES, UPLOADER_OVERHEAD_BYTES, AddressingStyle, Engine, FileKind,
                     LabInfo, Policy, RestoreSettings, RestoreTier, RetryMode, S3Settings, ScheduleSettings, Scope, ShardBounds,
                     SlurmSettings, SmallFiles, StorageClass, StorageSettings, UploaderSettings, policy_to_dict,
                     schema_keys)
from .validate import SITE_ENV_VAR, ValidationResult, file_kind, load_policy, policy_from_snapshot, validate_file

__all__ = [
    "ARCHIVED_CLASSES", "MANAGED_SBATCH_OPTIONS", "MAX_YAML_DEPTH", "MAX_YAML_FILE_BYTES", "MAX_YAML_NODES",
    "SITE_ENV_VAR", "TRANSITION_CLASSES", "UPLOADER_OVERHEAD_BYTES", "AddressingStyle", "Engine", "FileKind", "LabInfo",
    "Policy", "Prices",
    "RestoreSettings", "RestoreTier", "RetryMode", "S3Settings", "ScheduleSettings", "Scope", "ShardBounds",
    "SlurmSettings", "SmallFiles", "StorageClass", "StorageSettings", "UploaderSettings", "ValidationResult", "YamlLimitError",
    "check_price_table", "file_kind", "load_policy", "load_prices", "policy_from_snapshot", "policy_to_dict",
    "read_yaml", "schema_keys", "validate_file",
]
