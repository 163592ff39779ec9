//! A small migration runner: numbered SQL files embedded in the binary, one folder per backend,
//! applied in order and recorded in `herald_schema`. Migrations are additive so an older node
//! keeps working while a newer one runs beside it; a node refuses a schema newer than it knows.

/// One embedded migration.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The schema cannot be used by this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database schema is at version {found}, newer than this Herald knows (up to {known}); upgrade Herald before pointing it at this database"
    )]
    TooNew { found: i64, known: i64 },
    #[error(
        "the database schema is at version {found} but this Herald needs {known}; run `herald migrate` or start without --no-migrate"
    )]
    TooOld { found: i64, known: i64 },
}

/// Checks a found schema version against the newest one known.
pub(crate) fn check(found: i64, known: i64, will_migrate: bool) -> Result<(), SchemaError> {
    if found > known {
        return Err(SchemaError::TooNew { found, known });
    }
    if found < known && !will_migrate {
        return Err(SchemaError::TooOld { found, known });
    }
    Ok(())
}

pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "held_index",
        sql: include_str!("../../migrations/sqlite/0002_held_index.sql"),
    },
    Migration {
        version: 3,
        name: "held_by_id",
        sql: include_str!("../../migrations/sqlite/0003_held_by_id.sql"),
    },
    Migration {
        version: 4,
        name: "no_due_index",
        sql: include_str!("../../migrations/sqlite/0004_no_due_index.sql"),
    },
    Migration {
        version: 5,
        name: "no_foreign_keys_on_the_queue",
        sql: include_str!("../../migrations/sqlite/0005_no_foreign_keys_on_the_queue.sql"),
    },
    Migration {
        version: 6,
        name: "prune_indexes",
        sql: include_str!("../../migrations/sqlite/0006_prune_indexes.sql"),
    },
    Migration {
        version: 7,
        name: "disabled_destinations",
        sql: include_str!("../../migrations/sqlite/0007_disabled_destinations.sql"),
    },
];

pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "held_index",
        sql: include_str!("../../migrations/postgres/0002_held_index.sql"),
    },
    Migration {
        version: 3,
        name: "held_by_id",
        sql: include_str!("../../migrations/postgres/0003_held_by_id.sql"),
    },
    Migration {
        version: 4,
        name: "no_due_index",
        sql: include_str!("../../migrations/postgres/0004_no_due_index.sql"),
    },
    Migration {
        version: 5,
        name: "no_foreign_keys_on_the_queue",
        sql: include_str!("../../migrations/postgres/0005_no_foreign_keys_on_the_queue.sql"),
    },
    Migration {
        version: 6,
        name: "prune_indexes",
        sql: include_str!("../../migrations/postgres/0006_prune_indexes.sql"),
    },
    Migration {
        version: 7,
        name: "disabled_destinations",
        sql: include_str!("../../migrations/postgres/0007_disabled_destinations.sql"),
    },
];

/// The newest version among migrations.
pub(crate) fn latest(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing() {
        for set in [SQLITE, POSTGRES] {
            assert!(set.windows(2).all(|w| w[0].version < w[1].version));
        }
        assert_eq!(
            latest(SQLITE),
            latest(POSTGRES),
            "both backends are at the same version"
        );
    }

    #[test]
    fn schema_checks() {
        assert!(check(1, 1, false).is_ok());
        assert_eq!(
            check(2, 1, true),
            Err(SchemaError::TooNew { found: 2, known: 1 })
        );
        assert_eq!(
            check(0, 1, false),
            Err(SchemaError::TooOld { found: 0, known: 1 })
        );
        assert!(check(0, 1, true).is_ok());
    }
}
