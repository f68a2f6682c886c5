"""The type names of Kafka Connect and Debezium on the wire, defined once: the contracts name them, the lake
decodes by them and the simulator encodes with them.

A field of a change event's schema has a Kafka Connect schema type (the JSON converter's names: ``int64``,
``double``, ``bytes``, ...) and, for a semantic type, a schema name (``io.debezium.time.MicroTimestamp``,
``org.apache.kafka.connect.data.Decimal``, ...) that a contract's ``debeziumType`` names too.
"""

from __future__ import annotations

INT8, INT16, INT32, INT64 = "int8", "int16", "int32", "int64"
FLOAT32, FLOAT64 = "float", "double"
"""Kafka Connect's JSON converter names FLOAT32 ``float`` and FLOAT64 ``double`` in the schema."""
BOOLEAN, STRING, BYTES = "boolean", "string", "bytes"
STRUCT, MAP, ARRAY = "struct", "map", "array"
INTEGER_TYPES = (INT8, INT16, INT32, INT64)
FLOAT_TYPES = (FLOAT32, FLOAT64)
CONTAINER_TYPES = (STRUCT, MAP, ARRAY)

DATE = "io.debezium.time.Date"
TIMESTAMP = "io.debezium.time.Timestamp"
MICRO_TIMESTAMP = "io.debezium.time.MicroTimestamp"
NANO_TIMESTAMP = "io.debezium.time.NanoTimestamp"
ZONED_TIMESTAMP = "io.debezium.time.ZonedTimestamp"
YEAR = "io.debezium.time.Year"
CONNECT_DATE = "org.apache.kafka.connect.data.Date"
CONNECT_TIMESTAMP = "org.apache.kafka.connect.data.Timestamp"
DECIMAL = "org.apache.kafka.connect.data.Decimal"
VARIABLE_SCALE_DECIMAL = "io.debezium.data.VariableScaleDecimal"
JSON = "io.debezium.data.Json"
ENUM = "io.debezium.data.Enum"
ENUM_SET = "io.debezium.data.EnumSet"
UUID = "io.debezium.data.Uuid"
XML = "io.debezium.data.Xml"
