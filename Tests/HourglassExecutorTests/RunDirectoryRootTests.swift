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
    #expect(try FileManager.default.contentsOfDirectory(atPath: mine) == [RunDirectoryRoot.lockName])
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

  @Test("a link where the root should be is refused, not followed")
  func linkInPlaceOfRoot() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let elsewhere = scratch.path + "/elsewhere"
    try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
    #expect(symlink(elsewhere, scratch.path + "/hourglass-exec-1") == 0)
    #expect {
      _ = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-1")
    } throws: { error in
      (error as? ExecutorConfigurationError)?.problem.contains("not a link") == true
    }
    #expect(try FileManager.default.contentsOfDirectory(atPath: elsewhere).isEmpty)
  }

  @Test("an executor id becomes one safe path component; ids that had to change, or are long, get a hash of their own")
  func safeNames() {
    #expect(RunDirectoryRoot.safeName("exec-1.host_a") == "exec-1.host_a")
    let changed = ["../../etc", "a b/c", "a_b_c", "", "ünï", String(repeating: "x", count: 200), String(repeating: "x", count: 201)]
    let names = changed.map(RunDirectoryRoot.safeName)
    #expect(names[0].hasPrefix("_._.._etc-"))
    #expect(names[1].hasPrefix("a_b_c-"))
    #expect(names[2] == "a_b_c", "safe already: kept as it is, and not the same as \"a b/c\"'s")
    #expect(names[3].hasPrefix("-"))
    #expect(Set(names).count == names.count)
    for name in names {
      #expect(name.count <= RunDirectoryRoot.nameLimit)
      #expect(!name.contains("/") && !name.hasPrefix("."))
    }
  }
}
