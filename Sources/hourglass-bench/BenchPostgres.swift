import HourglassPostgresLauncher
import HourglassStorePostgres

/// The throwaway PostgreSQL server the benchmarks start in their folder, and the store a
/// coordinator gets on it.
enum BenchPostgres {
  /// A server in `folder/pg`, with room for the benchmarks' writes between checkpoints.
  static func start(in folder: String) async throws -> ThrowawayPostgres {
    try await ThrowawayPostgres.start(in: folder + "/pg", settings: ["shared_buffers=1GB", "max_wal_size=8GB"])
  }

  /// A new database `name` on `server`, configured as a coordinator's store in the benchmarks:
  /// 4 writer connections (group-commit batches in flight), 12 connections in all.
  static func coordinatorStore(on server: ThrowawayPostgres, database name: String) async throws -> PostgresTaskStore.Configuration {
    try await server.createDatabase(name)
    var configuration = PostgresTaskStore.Configuration.defaults(host: server.host, port: server.port, username: server.username, database: name)
    configuration.writerConnections = 4
    configuration.maxConnections = 12
    return configuration
  }
}
