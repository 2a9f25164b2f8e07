import Foundation
import Testing

@testable import HourglassExecutor

#if canImport(Glibc)
  import Glibc
#endif

@Suite("RunDirectoryRoot: an executor's own run directories, swept at start, never a live one's")
struct RunDirectoryRootTests {
  @Test("what an earlier executor of the id left is removed at start; another id's directories are not touched")
  func leftoversAreSwept() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let mine = scratch.path + "/hourglass-exec-1"
    let theirs = scratch.path + "/hourglass-exec-2"
    for path in [mine + "/hourglass-run-aaaaaa/d/e", mine + "/hourglass-run-bbbbbb", theirs + "/hourglass-run-cccccc"] {
      try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    #expect(FileManager.default.createFile(atPath: mine + "/hourglass-run-aaaaaa/d/e/f", contents: Data("x".utf8)))
    let root = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-1")
    #expect(root.path == mine)
    #expect(await root.sweepLeftovers() == 2)
    #expect(try FileManager.default.contentsOfDirectory(atPath: mine).isEmpty)
    #expect(FileManager.default.fileExists(atPath: theirs + "/hourglass-run-cccccc"))
    var info = stat()
    #expect(stat(mine, &info) == 0 && info.st_mode & 0o777 == 0o711)
  }

  @Test("a second executor of a live one's id is refused; once the first is gone, the id is free again")
  func oneExecutorPerID() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    var first: RunDirectoryRoot? = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-1")
    #expect(first != nil)
    #expect {
      _ = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-1")
    } throws: { error in
      (error as? ExecutorConfigurationError)?.problem.contains("another executor exec-1") == true
    }
    _ = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-2")
    first = nil
    _ = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-1")
  }

  @Test("an executor id becomes one safe path component")
  func safeNames() {
    #expect(RunDirectoryRoot.safeName("exec-1.host_a") == "exec-1.host_a")
    #expect(RunDirectoryRoot.safeName("../../etc") == "_._.._etc")
    #expect(RunDirectoryRoot.safeName("a b/c") == "a_b_c")
    #expect(RunDirectoryRoot.safeName("") == "_")
    #expect(RunDirectoryRoot.safeName("ünï") == "_n_")
  }
}
