import Foundation
import Logging
import Synchronization
import Testing

@testable import HourglassObservability

@Suite("JSON log handler: one object per line")
struct JSONLogHandlerTests {
  /// Collects the lines a handler writes.
  final class Lines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var output: JSONLogHandler.Output { JSONLogHandler.Output { line in self.lines.withLock { $0.append(line) } } }
  }

  static let fixedMicros: Int64 = 1_795_996_800_123_456  // 2026-11-30T00:00:00.123456Z

  func logger(_ lines: Lines, provider: Logger.MetadataProvider? = nil) -> Logger {
    var logger = Logger(label: "hourglass.test") { label in
      JSONLogHandler(label: label, output: lines.output, metadataProvider: provider, nowMicros: { Self.fixedMicros })
    }
    logger.logLevel = .debug
    return logger
  }

  func object(_ line: String) throws -> [String: Any] {
    #expect(line.hasSuffix("\n"))
    #expect(line.dropLast().firstIndex(of: "\n") == nil, "one line per event")
    let parsed = try JSONSerialization.jsonObject(with: Data(line.utf8))
    return try #require(parsed as? [String: Any])
  }

  @Test("fixed fields, then metadata flattened; nested dictionaries become dotted keys")
  func fields() throws {
    let lines = Lines()
    var logger = logger(lines)
    logger[metadataKey: "hourglass.coordinator"] = "c1"
    logger.info(
      "rpc",
      metadata: [
        "hourglass.method": "/hourglass.v1.TaskService/Schedule",
        "hourglass.count": .stringConvertible(3),
        "nested": ["a": "1", "b": ["c": "2"]],
        "list": ["x", "y"],
      ])
    let line = try #require(lines.all.first)
    #expect(line.hasPrefix(#"{"timestamp":"2026-11-30T00:00:00.123456Z","level":"info","label":"hourglass.test","message":"rpc","#))
    let object = try object(line)
    #expect(object["hourglass.method"] as? String == "/hourglass.v1.TaskService/Schedule")
    #expect(object["hourglass.count"] as? String == "3")
    #expect(object["hourglass.coordinator"] as? String == "c1")
    #expect(object["nested.a"] as? String == "1")
    #expect(object["nested.b.c"] as? String == "2")
    #expect(object["list"] as? [String] == ["x", "y"])
  }

  @Test("strings are escaped: quotes, backslashes, control characters, line breaks")
  func escaping() throws {
    let lines = Lines()
    let logger = logger(lines)
    let nasty = "a \"quoted\" \\ back\nslash\ttab\u{01}bell\u{2028}sep é ☃"
    logger.error("\(nasty)", metadata: ["hourglass.error": "\(nasty)"])
    let object = try object(try #require(lines.all.first))
    #expect(object["message"] as? String == nasty)
    #expect(object["hourglass.error"] as? String == nasty)
    #expect(object["level"] as? String == "error")
  }

  @Test("metadata cannot overwrite the fixed fields; provider metadata is included")
  func collisions() throws {
    let lines = Lines()
    let provider = Logger.MetadataProvider { ["hourglass.request": "r-1"] }
    let logger = logger(lines, provider: provider)
    logger.warning("hello", metadata: ["message": "spoofed", "level": "trace"])
    let object = try object(try #require(lines.all.first))
    #expect(object["message"] as? String == "hello")
    #expect(object["level"] as? String == "warning")
    #expect(object["metadata.message"] as? String == "spoofed")
    #expect(object["metadata.level"] as? String == "trace")
    #expect(object["hourglass.request"] as? String == "r-1")
  }

  @Test("the level filter applies", arguments: [Logger.Level.debug, .info, .error])
  func levels(_ level: Logger.Level) throws {
    let lines = Lines()
    var logger = logger(lines)
    logger.logLevel = level
    logger.debug("d")
    logger.info("i")
    logger.error("e")
    let expected = ["d", "i", "e"].enumerated().filter { index, _ in [Logger.Level.debug, .info, .error][index] >= level }.map(\.element)
    #expect(try lines.all.map { try object($0)["message"] as? String } == expected)
  }

  @Test(
    "RFC 3339 timestamps in UTC",
    arguments: [
      (Int64(0), "1970-01-01T00:00:00.000000Z"),
      (1_795_996_800_000_001, "2026-11-30T00:00:00.000001Z"),
      (951_782_400_000_000, "2000-02-29T00:00:00.000000Z"),
      (4_107_542_399_999_999, "2100-02-28T23:59:59.999999Z"),
      (-1, "1969-12-31T23:59:59.999999Z"),
    ])
  func timestamps(_ micros: Int64, _ expected: String) {
    #expect(RFC3339.format(micros: micros) == expected)
  }
}
