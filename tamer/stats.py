"""`tamer stats`: DuckDB queries over the catalog, as data (for --json) and for display.

Each section is one SQL query over the catalog views; later stages append their own sections
to `SECTIONS` so one command describes the whole dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from storage import queries
from storage.schemas import TABLES
from storage.shards import ShardStore


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    sql: str
    chart: str | None = None  # the column drawn as bars (labels: the text columns), or None


SECTIONS: list[Section] = [
    Section("per_class", "Images per class",
            "SELECT coalesce(class_name, '(none)') AS class, count(*) AS images, "
            "count(DISTINCT subject) AS subjects FROM images GROUP BY 1 ORDER BY 2 DESC, 1",
            chart="images"),
    Section("per_subject", "Images per subject",
            "SELECT coalesce(subject, '(none)') AS subject, any_value(class_name) AS class, "
            "count(*) AS images FROM images GROUP BY 1 ORDER BY 3 DESC, 1"),
    Section("per_source_kind", "Images per source kind",
            "SELECT source_kind, count(*) AS images FROM images GROUP BY 1 ORDER BY 2 DESC",
            chart="images"),
    Section("formats", "Original formats and modes",
            "SELECT format, mode, count(*) AS images FROM images GROUP BY 1, 2 ORDER BY 3 DESC",
            chart="images"),
    Section("resolutions", "Resolutions",
            "SELECT width || 'x' || height AS resolution, count(*) AS images FROM images "
            "GROUP BY 1 ORDER BY 2 DESC, 1", chart="images"),
    Section("flags", "Flagged images",
            "SELECT flag, count(*) AS images FROM (SELECT unnest(flags) AS flag FROM images) "
            "GROUP BY 1 ORDER BY 2 DESC"),
    Section("quarantine_reasons", "Quarantine reasons",
            "SELECT stage, reason, count(*) AS items FROM quarantine GROUP BY 1, 2 "
            "ORDER BY 3 DESC", chart="items"),
    Section("duplicates", "Exact duplicates skipped",
            "SELECT count(*) AS skipped, count(DISTINCT image_id) AS distinct_images "
            "FROM duplicates"),
]

# Captions: each image's newest caption, the one training reads (a named query, shared).
LATEST_CAPTIONS = f"({queries.LATEST_CAPTIONS})"
# The caption sections read it from a temporary table `collect` fills once (`latest_table`):
# at 1M captions the newest-caption join took ~0.4 s, paid by each of the four sections.
LATEST_TABLE = "latest_captions"
LATEST_COLUMNS = ("class_name", "raw_caption", "raw_words", "composed_caption", "composed_words", "attributes")
# The caption stage stores each caption's word count (`word_count`); rows written before those
# columns existed are counted by the same rule in SQL. At 1M captions, splitting every string
# was most of the length queries' time (`benchmarks/stats_queries.py`).
WORDS_SQL = "len(string_split(trim({0}), ' '))"


def word_count(text: str) -> int:
    """Space-separated tokens after trimming spaces at the ends (`WORDS_SQL` in Python)."""
    return len(text.strip(" ").split(" "))


_WORDS = "coalesce({0}_words, " + WORDS_SQL.format("{0}_caption") + ")"
SECTIONS += [
    Section("caption_configs", "Captions per model and config (newest first)",
            "SELECT captioner_id, clip_id, config_hash, count(*) AS captions, "
            "max(created_at) AS latest FROM captions GROUP BY 1, 2, 3 ORDER BY latest DESC"),
    Section("caption_lengths", "Caption length in words (latest caption per image)",
            f"SELECT kind, count(*) AS captions, min(words) AS min, round(avg(words), 1) AS mean, "
            f"median(words) AS median, max(words) AS max FROM ("
            f"SELECT unnest(['raw', 'composed']) AS kind, unnest([{_WORDS.format('raw')}, "
            f"{_WORDS.format('composed')}]) AS words FROM {LATEST_TABLE}) GROUP BY 1 ORDER BY 1"),
    Section("caption_length_histogram", "Composed caption length (words)",
            f"SELECT (bucket * 5) || '-' || (bucket * 5 + 4) AS words, count(*) AS captions "
            f"FROM (SELECT {_WORDS.format('composed')} // 5 AS bucket "
            f"FROM {LATEST_TABLE}) GROUP BY bucket ORDER BY bucket", chart="captions"),
    Section("caption_attributes", "Top attribute values per class (latest captions)",
            "SELECT class, attribute, value, count(*) AS images, "
            "round(avg(probability), 3) AS mean_probability, count(*) FILTER (named) AS named "
            "FROM (SELECT class_name AS class, unnest(attributes, recursive := true) "
            f"FROM {LATEST_TABLE}) GROUP BY 1, 2, 3 ORDER BY 1, 2, 4 DESC, 3"),
    # Words are the runs of a-z in the lower-cased caption. Split on spaces first and count
    # each distinct token once, so the regex runs per distinct token, not per word of 1M
    # captions (2.35 -> 1.04 s at 1M captions); a token splits into the same runs either way.
    Section("caption_words", "Most common words in raw captions (latest captions)",
            "SELECT word, sum(uses)::BIGINT AS uses FROM (SELECT unnest(regexp_split_to_array("
            "token, '[^a-z]+')) AS word, uses FROM (SELECT token, count(*) AS uses FROM (SELECT "
            f"unnest(string_split(lower(raw_caption), ' ')) AS token FROM {LATEST_TABLE}) "
            "GROUP BY token)) WHERE length(word) > 2 AND word NOT IN ('the', 'and', "
            "'with', 'for', 'are', 'its', 'this', 'that', 'from', 'has', 'there') "
            "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 25", chart="uses"),
]

# Embeddings: near-duplicates, and the newest snapshot of identity groups and training pairs.
SECTIONS += [
    Section("near_duplicates", "Near-duplicate image pairs (CLIP cosine above threshold)",
            "SELECT count(*) AS pairs, (SELECT count(*) FROM (SELECT image_id FROM "
            "near_duplicates UNION SELECT other_id FROM near_duplicates)) AS images, "
            "round(min(cosine)::DOUBLE, 4) AS min_cosine, round(max(cosine)::DOUBLE, 4) AS max_cosine "
            "FROM near_duplicates"),
    Section("subject_groups", "Subject groups by origin (label, kNN proposal, none)",
            "SELECT origin, count(*) AS images, count(DISTINCT group_id) AS groups "
            f"FROM ({queries.latest_snapshot_sql('subject_groups')}) "
            "GROUP BY 1 ORDER BY 1"),
    Section("pairs_per_subject", "Cross-reference pairs per subject",
            f"SELECT subject, count(*) AS pairs FROM ({queries.latest_snapshot_sql('pairs')}) "
            "GROUP BY 1 ORDER BY 2 DESC, 1", chart="pairs"),
]


def overview(store: ShardStore, con: duckdb.DuckDBPyConnection) -> dict:
    """Headline numbers: sizes from the table logs, counts from the catalog."""
    images, subjects, classes = con.execute(
        "SELECT count(*), count(DISTINCT subject), count(DISTINCT class_name) FROM images"
    ).fetchone()
    tables = {}
    for table in TABLES:
        shards = store.shards(table)
        tables[table] = {"shards": len(shards), "rows": sum(s.rows for s in shards),
                         "bytes": sum(s.num_bytes for s in shards)}
    return {"root": store.location.uri, "fingerprint": store.fingerprint(), "images": images,
            "subjects": subjects, "classes": classes, "tables": tables}


def latest_table(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)fill the temporary `LATEST_TABLE` the caption sections read; it lives as long as the
    connection (read-only connections may create temporary tables)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {LATEST_TABLE} AS "
                f"SELECT {', '.join(LATEST_COLUMNS)} FROM {LATEST_CAPTIONS}")


def collect(store: ShardStore, con: duckdb.DuckDBPyConnection) -> dict:
    """Every section as a list of row dicts, plus the overview."""
    result: dict = {"overview": overview(store, con)}
    latest_table(con)
    for section in SECTIONS:
        cursor = con.execute(section.sql)
        names = [column[0] for column in cursor.description]
        result[section.key] = [dict(zip(names, row)) for row in cursor.fetchall()]
    return result
