import HourglassPostgresLauncher
import HourglassStore
import HourglassStoreConformance
import HourglassStorePostgres
import HourglassTestSupport
import PostgresNIO  // re-exports Logging.Logger
import Testing

/// Opens a store on a fresh database of the suite's server, or on `database` (a second
/// coordinator's view of the same store).
func openTestStore(partitionCount: Int32 = 8, database: String? = nil) async throws -> PostgresTaskStore {
  let server = try #require(PostgresTestServer.current, "no PostgreSQL test server in scope")
  let name: String
  if let database { name = database } else { name = try await server.createDatabase() }
  var configuration = PostgresTaskStore.Configuration.defaults(
    host: server.host, port: server.port, username: server.username, database: name)
  configuration.partitionCount = partitionCount
  configuration.maxConnections = 6
  configuration.writerConnections = 2
  var logger = Logger(label: "hourglass.store.postgres.test")
  logger.logLevel = .warning
  return try await PostgresTaskStore(configuration: configuration, logger: logger)
}

@Suite(
  "PostgreSQL store: conformance", .throwawayPostgres, .timeLimit(.minutes(3)),
  .enabled(if: postgresAvailable, "PostgreSQL is not installed (set HOURGLASS_REQUIRE_POSTGRES=1 to fail instead)"))
struct PostgresConformanceTests {
  @Test(arguments: ConformanceCase.all)
  func conformance(_ testCase: ConformanceCase) async throws {
    try await testCase.run { try await openTestStore() }
  }
}
