import Foundation

/// The executables of this package built beside the test binary.
enum BuiltProducts {
  /// A built executable of this package, found beside the test binary in the build products folder.
  static func path(_ name: String) -> String? {
    var candidates: [String] = []
    if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
      candidates.append(URL(fileURLWithPath: exe).deletingLastPathComponent().path)
    }
    candidates.append(Bundle.main.bundleURL.deletingLastPathComponent().path)
    candidates.append(Bundle.main.bundleURL.path)
    for directory in candidates {
      let path = "\(directory)/\(name)"
      if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
  }
}
