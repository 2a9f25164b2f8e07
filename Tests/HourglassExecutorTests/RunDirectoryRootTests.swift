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

  @Test("a link where the root should be is not followed: the executor makes a root of its own under a new name")
  func linkInPlaceOfRoot() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let elsewhere = scratch.path + "/elsewhere"
    try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
    #expect(symlink(elsewhere, scratch.path + "/hourglass-exec-1") == 0)
    let root = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-1")
    #expect(root.fallbackReason?.contains("not a link") == true)
    #expect(root.path.hasPrefix(scratch.path + "/hourglass-exec-1@") && root.path.utf8.count == scratch.path.utf8.count + 24)
    var info = stat()
    #expect(lstat(root.path, &info) == 0 && info.st_mode & 0o170000 == 0o040000 && info.st_mode & 0o777 == 0o711)
    #expect(await root.sweepLeftovers() == 0)
    #expect(try FileManager.default.contentsOfDirectory(atPath: elsewhere).isEmpty)
  }

  @Test(
    "another user's directory where the root should be: a root of the executor's own under a new name",
    .enabled(if: geteuid() == 0, "only root can give a directory to another user (CI runs the tests as root)"))
  func anotherUsersRoot() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let squatted = scratch.path + "/hourglass-exec-1"
    // Mode 0: not even its owner's executor could read it; told apart from a failure all the same.
    #expect(mkdir(squatted, 0) == 0 && chown(squatted, 65_534, 65_534) == 0)
    let root = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-1")
    #expect(root.fallbackReason?.contains("belongs to another user (uid 65534)") == true)
    #expect(root.path.hasPrefix(squatted + "@"))
    #expect(try FileManager.default.contentsOfDirectory(atPath: squatted).isEmpty, "nothing made in theirs")
    #expect(chmod(squatted, 0o755) == 0)
  }

  @Test("a root under a new name is held like the usual one: a second executor of the id is refused, and the next one removes it")
  func fallbackRootsAreLockedAndSwept() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let usual = scratch.path + "/hourglass-exec-1"
    #expect(symlink(scratch.path + "/elsewhere", usual) == 0)
    var first: RunDirectoryRoot? = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-1")
    let fallback = try #require(first?.path)
    try FileManager.default.createDirectory(atPath: fallback + "/hourglass-run-aaaaaa/d", withIntermediateDirectories: true)
    #expect {
      _ = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-1")
    } throws: { error in
      (error as? ExecutorConfigurationError)?.problem.contains("another executor exec-1") == true
    }
    // Another id whose usual name starts the same is not taken for exec-1's.
    _ = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-1-abcdef")
    first = nil
    // The name is free again: the usual root is used, and the dead executor's root goes.
    #expect(unlink(usual) == 0)
    let next = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-1")
    #expect(next.path == usual && next.fallbackReason == nil)
    #expect(FileManager.default.fileExists(atPath: fallback))
    #expect(await next.sweepLeftovers() == 1)
    #expect(!FileManager.default.fileExists(atPath: fallback))
  }

  @Test("after claiming its root, an executor sees another root of its id locked since (they started together)")
  func rootsLockedMeanwhileAreSeen() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let name = "hourglass-exec-1"
    #expect(RunDirectoryRoot.heldRoot(in: scratch.path, named: name, excluding: []) == nil)
    let live = try RunDirectoryRoot(temporaryDirectory: scratch.path, executorID: "exec-1")
    #expect(RunDirectoryRoot.heldRoot(in: scratch.path, named: name, excluding: []) == live.path)
    #expect(RunDirectoryRoot.heldRoot(in: scratch.path, named: name, excluding: [live.path]) == nil)
    // A fallback root whose lock is free (its executor died) is not held; one locked is.
    let dead = scratch.path + "/" + name + "@abcdef"
    #expect(mkdir(dead, 0o711) == 0 && FileManager.default.createFile(atPath: dead + "/.lock", contents: nil))
    #expect(RunDirectoryRoot.heldRoot(in: scratch.path, named: name, excluding: [live.path]) == nil)
    let holder = open(dead + "/.lock", O_RDWR | O_CLOEXEC)
    defer { close(holder) }
    #expect(flock(holder, LOCK_EX | LOCK_NB) == 0)
    #expect(RunDirectoryRoot.heldRoot(in: scratch.path, named: name, excluding: [live.path]) == dead)
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
