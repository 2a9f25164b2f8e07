import HourglassStore
import HourglassStoreConformance
import HourglassStoreSQLite
import Testing

@Suite("SQLite store: conformance")
struct SQLiteConformanceTests {
  @Test(arguments: ConformanceCase.all)
  func conformance(_ testCase: ConformanceCase) async throws {
    try await TemporaryDirectory.with { dir in
      try await testCase.run {
        var configuration = SQLiteTaskStore.Configuration.defaults(path: dir.file("store.sqlite"))
        configuration.partitionCount = 8
        configuration.cacheSizeKiB = 2048
        return try await SQLiteTaskStore(configuration: configuration)
      }
    }
  }
}
