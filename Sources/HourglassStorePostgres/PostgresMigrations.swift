/// The numbered schema migrations of the PostgreSQL store, each a list of statements run in one
/// transaction. Append new ones; never edit an applied one.
enum PostgresMigrations {
  struct Migration {
    var version: Int32
    var name: String
    var statements: [String]
  }

  static func all(partitionCount: Int32) -> [Migration] {
    [
      Migration(
        version: 1, name: "initial",
        statements: [
          """
          CREATE TABLE store_meta (
            key text PRIMARY KEY,
            value bigint NOT NULL
          )
          """,
          "INSERT INTO store_meta (key, value) VALUES ('partition_count', \(partitionCount))",
          "CREATE SEQUENCE fence_seq AS bigint",
          """
          CREATE TABLE blobs (
            digest bytea PRIMARY KEY,
            content bytea NOT NULL,
            size integer NOT NULL
          )
          """,
          """
          CREATE TABLE tasks (
            id uuid PRIMARY KEY,
            owner text NOT NULL,
            name text NOT NULL,
            operator text NOT NULL,
            blob_digest bytea,
            arguments text NOT NULL,
            time_zone text NOT NULL,
            schedule_spec bytea NOT NULL,
            recurring boolean NOT NULL,
            priority integer NOT NULL,
            max_attempts integer NOT NULL,
            timeout_us bigint NOT NULL,
            state text NOT NULL,
            partition integer NOT NULL,
            next_run_us bigint,
            due_us bigint,
            due_bucket bigint,
            last_run_us bigint,
            last_run_state text,
            version bigint NOT NULL,
            created_us bigint NOT NULL,
            deleted_us bigint
          )
          """,
          "CREATE INDEX tasks_due ON tasks (partition, due_bucket, due_us) WHERE state = 'active'",
          "CREATE INDEX tasks_owner ON tasks (owner, id)",
          "CREATE INDEX tasks_deleted ON tasks (deleted_us) WHERE state = 'deleted'",
          """
          CREATE TABLE runs (
            task_id uuid NOT NULL,
            scheduled_us bigint NOT NULL,
            attempt integer NOT NULL,
            state text NOT NULL,
            lease_owner text,
            lease_expires_us bigint,
            fence bigint NOT NULL,
            started_us bigint,
            finished_us bigint,
            retry_at_us bigint,
            exit_status integer,
            output_tail bytea NOT NULL DEFAULT '\\x'::bytea,
            error text,
            PRIMARY KEY (task_id, scheduled_us)
          )
          """,
          "CREATE INDEX runs_lease ON runs (state, lease_expires_us)",
          // Cluster: each partition is owned by one coordinator at a time; the epoch grows on every
          // change of owner and is meant to fence that partition's writes (see docs/storage.md).
          """
          CREATE TABLE partition_leases (
            partition integer PRIMARY KEY,
            owner text NOT NULL,
            epoch bigint NOT NULL,
            expires_us bigint NOT NULL
          )
          """,
        ]),
      Migration(
        version: 2, name: "idempotency-keys",
        statements: [
          """
          CREATE TABLE idempotency_keys (
            owner text NOT NULL,
            key text NOT NULL,
            task_id uuid NOT NULL,
            PRIMARY KEY (owner, key)
          )
          """,
          "CREATE INDEX idempotency_keys_task ON idempotency_keys (task_id)",
        ]),
      Migration(
        version: 3, name: "due-cursor",
        statements: [
          // Due entries are paged by (due_us, id): many may be due at one instant.
          "CREATE INDEX tasks_due_id ON tasks (partition, due_bucket, due_us, id) WHERE state = 'active'",
          "DROP INDEX tasks_due",
        ]),
      Migration(
        version: 4, name: "runs-completed",
        statements: [
          // A counter kept with each result, so Get and List never count a long run history.
          "ALTER TABLE tasks ADD COLUMN runs_completed bigint NOT NULL DEFAULT 0",
          """
          UPDATE tasks SET runs_completed = (
            SELECT count(*) FROM runs
            WHERE runs.task_id = tasks.id AND runs.state IN ('succeeded', 'failed', 'dead')
          )
          """,
        ]),
      Migration(
        version: 5, name: "cluster-membership",
        statements: [
          // The coordinators alive in the cluster (each renews its row): partitions are spread
          // over them (docs/storage.md, "Cluster").
          "CREATE TABLE coordinators (id text PRIMARY KEY, expires_us bigint NOT NULL)"
        ]),
      Migration(
        version: 6, name: "leased-runs-index",
        statements: [
          // Only leased runs are looked up by expiry (lease recovery): the partial index holds
          // the leases in flight instead of one entry per run ever recorded.
          "CREATE INDEX runs_leased ON runs (lease_expires_us) WHERE state = 'leased'",
          "DROP INDEX runs_lease",
        ]),
      Migration(
        version: 7, name: "finished-tasks-index",
        statements: [
          // Finished tasks by the instant their retention counts from (purgeFinished); tasks
          // enter the partial index once, when they finish.
          "CREATE INDEX tasks_finished ON tasks (coalesce(last_run_us, created_us)) WHERE state IN ('completed', 'dead')"
        ]),
      Migration(
        version: 8, name: "blob-references",
        statements: [
          // Tasks by blob, so a purge can tell which of its tasks' blobs no other task refers
          // to; then the blobs earlier versions left behind when they purged their last task.
          "CREATE INDEX tasks_blob ON tasks (blob_digest) WHERE blob_digest IS NOT NULL",
          "DELETE FROM blobs WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.blob_digest = blobs.digest)",
        ]),
      Migration(
        version: 9, name: "coordinator-addresses",
        statements: [
          // Where executors reach each coordinator (announced to them), and whether it
          // dispatches: a coordinator with an address heartbeats before its first executor
          // arrives, so that it can be announced, but owns no partition until then.
          "ALTER TABLE coordinators ADD COLUMN address text",
          "ALTER TABLE coordinators ADD COLUMN dispatching boolean NOT NULL DEFAULT true",
        ]),
      Migration(
        version: 10, name: "keys-in-tasks",
        statements: [
          // A task's idempotency key moves into its row, under a partial unique index: the
          // task insert is the claim (ON CONFLICT DO NOTHING), one statement and one index
          // entry per keyed task instead of a table row and two index entries. Only keyed
          // tasks' rows are rewritten. Coordinators of earlier versions write the dropped
          // table: a cluster is upgraded all together (docs/operations.md).
          "ALTER TABLE tasks ADD COLUMN idempotency_key text",
          """
          UPDATE tasks SET idempotency_key = k.key FROM idempotency_keys k
          WHERE k.task_id = tasks.id AND k.owner = tasks.owner
          """,
          """
          CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (owner, idempotency_key)
          WHERE idempotency_key IS NOT NULL
          """,
          "DROP TABLE idempotency_keys",
        ]),
      Migration(
        version: 11, name: "lease-incarnations",
        statements: [
          // The process of its coordinator that holds each partition lease: a coordinator
          // restarted under the same id takes its partitions back with a new epoch, which fences
          // the former process if that one still runs (paused, not dead). Leases written before
          // have incarnation 0, which any process of their owner takes over.
          "ALTER TABLE partition_leases ADD COLUMN incarnation bigint NOT NULL DEFAULT 0"
        ]),
      Migration(
        version: 12, name: "coordinator-incarnations",
        statements: [
          // Incarnations numbered by a sequence (a clock may be set back between two starts),
          // and the process that last wrote each membership row: a former process does not
          // write over a later one's row, and stands down when it sees it. Rows written before
          // have incarnation 0.
          "CREATE SEQUENCE coordinator_incarnations",
          "ALTER TABLE coordinators ADD COLUMN incarnation bigint NOT NULL DEFAULT 0",
        ]),
    ]
  }
}
