import GRDB

/// The numbered schema migrations of the SQLite store. Append new ones; never edit an applied one.
enum SQLiteMigrations {
  static func migrator(partitionCount: Int32) -> DatabaseMigrator {
    var migrator = DatabaseMigrator()

    migrator.registerMigration("0001-initial") { db in
      try db.execute(
        sql: """
          CREATE TABLE store_meta (
            key TEXT PRIMARY KEY NOT NULL,
            value INTEGER NOT NULL
          ) WITHOUT ROWID;
          INSERT INTO store_meta (key, value) VALUES ('partition_count', \(partitionCount));
          INSERT INTO store_meta (key, value) VALUES ('fence', 0);

          CREATE TABLE blobs (
            digest BLOB PRIMARY KEY NOT NULL,
            content BLOB NOT NULL,
            size INTEGER NOT NULL
          ) WITHOUT ROWID;

          CREATE TABLE tasks (
            id BLOB PRIMARY KEY NOT NULL,
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            operator TEXT NOT NULL,
            blob_digest BLOB,
            arguments BLOB NOT NULL,
            time_zone TEXT NOT NULL,
            schedule_spec BLOB NOT NULL,
            recurring INTEGER NOT NULL,
            priority INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            timeout_us INTEGER NOT NULL,
            state TEXT NOT NULL,
            partition INTEGER NOT NULL,
            next_run_us INTEGER,
            due_us INTEGER,
            due_bucket INTEGER,
            last_run_us INTEGER,
            last_run_state TEXT,
            version INTEGER NOT NULL,
            created_us INTEGER NOT NULL,
            deleted_us INTEGER
          );
          CREATE INDEX tasks_due ON tasks (partition, due_bucket, due_us) WHERE state = 'active';
          CREATE INDEX tasks_owner ON tasks (owner, id);
          CREATE INDEX tasks_deleted ON tasks (deleted_us) WHERE state = 'deleted';

          CREATE TABLE runs (
            task_id BLOB NOT NULL,
            scheduled_us INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            state TEXT NOT NULL,
            lease_owner TEXT,
            lease_expires_us INTEGER,
            fence INTEGER NOT NULL,
            started_us INTEGER,
            finished_us INTEGER,
            retry_at_us INTEGER,
            exit_status INTEGER,
            output_tail BLOB NOT NULL DEFAULT x'',
            error TEXT,
            PRIMARY KEY (task_id, scheduled_us)
          ) WITHOUT ROWID;
          CREATE INDEX runs_lease ON runs (state, lease_expires_us);
          """)
    }
    migrator.registerMigration("0002-idempotency-keys") { db in
      try db.execute(
        sql: """
          CREATE TABLE idempotency_keys (
            owner TEXT NOT NULL,
            key TEXT NOT NULL,
            task_id BLOB NOT NULL,
            PRIMARY KEY (owner, key)
          ) WITHOUT ROWID;
          CREATE INDEX idempotency_keys_task ON idempotency_keys (task_id);
          """)
    }
    migrator.registerMigration("0003-due-cursor") { db in
      // Due entries are paged by (due_us, id): many may be due at one instant.
      try db.execute(
        sql: """
          CREATE INDEX tasks_due_id ON tasks (partition, due_bucket, due_us, id) WHERE state = 'active';
          DROP INDEX tasks_due;
          """)
    }
    migrator.registerMigration("0004-runs-completed") { db in
      // A counter kept with each result, so Get and List never count a long run history.
      try db.execute(
        sql: """
          ALTER TABLE tasks ADD COLUMN runs_completed INTEGER NOT NULL DEFAULT 0;
          UPDATE tasks SET runs_completed = (
            SELECT count(*) FROM runs
            WHERE runs.task_id = tasks.id AND runs.state IN ('succeeded', 'failed', 'dead')
          );
          """)
    }
    migrator.registerMigration("0005-leased-runs-index") { db in
      // Only leased runs are looked up by expiry (lease recovery). Indexing every run by
      // (state, expiry) kept one entry per run ever recorded and moved it on every result; the
      // partial index holds the leases in flight, and a result only removes its entry.
      try db.execute(
        sql: """
          CREATE INDEX runs_leased ON runs (lease_expires_us) WHERE state = 'leased';
          DROP INDEX runs_lease;
          """)
    }
    migrator.registerMigration("0006-finished-tasks-index") { db in
      // Finished tasks by the instant their retention counts from, for purgeFinished. Partial:
      // tasks enter it once, when they finish, and leave it when purged.
      try db.execute(
        sql: """
          CREATE INDEX tasks_finished ON tasks (coalesce(last_run_us, created_us))
          WHERE state IN ('completed', 'dead');
          """)
    }
    migrator.registerMigration("0007-blob-references") { db in
      // Tasks by blob, so a purge can tell which of its tasks' blobs no other task refers to.
      // Then the blobs earlier versions left behind when they purged the last task using them.
      try db.execute(
        sql: """
          CREATE INDEX tasks_blob ON tasks (blob_digest) WHERE blob_digest IS NOT NULL;
          DELETE FROM blobs WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE blob_digest = blobs.digest);
          """)
    }
    migrator.registerMigration("0008-keys-in-tasks") { db in
      // A task's idempotency key moves into its row, under a partial unique index. The table of
      // keys and its index by task were two more B-trees written for every keyed Schedule on the
      // single writer; the key now costs one index entry. Only keyed tasks' rows are rewritten.
      // Keys of tasks that no longer exist (none are expected: a purge removed a task's key with
      // it) have nothing to stand for and go with the table.
      try db.execute(
        sql: """
          ALTER TABLE tasks ADD COLUMN idempotency_key TEXT;
          UPDATE tasks SET idempotency_key = (
            SELECT key FROM idempotency_keys WHERE idempotency_keys.task_id = tasks.id
              AND idempotency_keys.owner = tasks.owner
          )
          WHERE id IN (SELECT task_id FROM idempotency_keys);
          CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (owner, idempotency_key)
          WHERE idempotency_key IS NOT NULL;
          DROP TABLE idempotency_keys;
          """)
    }
    return migrator
  }
}
