/// Names one method of a service; its path on the wire is `/service/method`.
public struct MethodDescriptor: Hashable, Sendable, CustomStringConvertible {
  /// The fully qualified service, e.g. `hourglass.v1.TaskService`.
  public var service: String {
    didSet { path = Self.path(service, method) }
  }
  /// The method, e.g. `Schedule`.
  public var method: String {
    didSet { path = Self.path(service, method) }
  }
  /// The path sent in the request HEADERS; built once, not on every call.
  public private(set) var path: String

  /// Creates a descriptor.
  public init(service: String, method: String) {
    self.service = service
    self.method = method
    self.path = Self.path(service, method)
  }

  private static func path(_ service: String, _ method: String) -> String { "/\(service)/\(method)" }

  public var description: String { path }
}

/// Options for one client call.
public struct CallOptions: Sendable {
  /// How long the call may take, end to end; `nil` for no deadline.
  public var timeout: Duration?
  /// Request metadata.
  public var metadata: Metadata

  /// No deadline, no metadata.
  public static var defaults: CallOptions { CallOptions() }

  /// Creates options.
  public init(timeout: Duration? = nil, metadata: Metadata = [:]) {
    self.timeout = timeout
    self.metadata = metadata
  }
}
