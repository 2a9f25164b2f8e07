import Foundation
import Testing

@testable import HourglassPostgresLauncher

#if canImport(Glibc)
  import Glibc
#endif

/// The throwaway server's watchdog: its command runs when the starting process's end of the pipe
/// closes (that process died), and never after a normal stop.
@Suite("Throwaway PostgreSQL watchdog")
struct ThrowawayPostgresWatchdogTests {
  static func marker() -> String {
    FileManager.default.temporaryDirectory.path + "/hourglass-watchdog-\(UUID().uuidString.prefix(8))"
  }

  static func exitStatus(of pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status
  }

  @Test("the command runs when the lifeline closes")
  func firesWhenTheParentGoes() throws {
    let path = Self.marker()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let watchdog = try #require(Watchdog(stopCommand: ["/bin/sh", "-c", "echo fired > \(path)"]))
    watchdog.closeLifeline()
    #expect(Self.exitStatus(of: watchdog.pid) == 0)
    #expect((try? String(contentsOfFile: path, encoding: .utf8)) == "fired\n")
  }

  @Test("a dismissed watchdog never runs its command")
  func dismissed() throws {
    let path = Self.marker()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let watchdog = try #require(Watchdog(stopCommand: ["/bin/sh", "-c", "echo fired > \(path)"]))
    watchdog.dismiss()
    watchdog.dismiss()  // a second stop is harmless
    #expect(!FileManager.default.fileExists(atPath: path))
  }
}
