import Darwin
import Foundation

/// What the records say about the phone: model and chip, iOS version, memory, cores.
enum DeviceInfo {
  /// The model identifier, e.g. "iPhone14,5" (the simulated one on the simulator).
  static var machine: String {
    if let sim = ProcessInfo.processInfo.environment["SIMULATOR_MODEL_IDENTIFIER"] { return sim + " simulator" }
    var u = utsname()
    uname(&u)
    return withUnsafeBytes(of: &u.machine) { raw in
      String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
  }

  /// "iPhone 13 (A15)"; `hostName` (devicectl's marketing name) covers models the table lacks.
  static func description(hostName: String? = nil) -> String {
    deviceDescription(machine: machine, hostName: hostName)
  }

  static var os: String {
    let v = ProcessInfo.processInfo.operatingSystemVersion
    return osDescription(major: v.majorVersion, minor: v.minorVersion, patch: v.patchVersion)
  }

  static var appVersion: String {
    Bundle.main.infoDictionary?["CFBundleShortVersionString"] as? String ?? "unknown"
  }

  static var runtime: [String: String] {
    var r = ["executorch": ExecuTorchSession.version, "coreml": os, "app": appVersion]
    #if canImport(onnxruntime_genai_objc)
    r["onnxruntime-genai"] = GenaiSession.version
    #endif
    return r
  }

  /// ProcessInfo.thermalState: "nominal", "fair", "serious" or "critical".
  static var thermalState: String {
    switch ProcessInfo.processInfo.thermalState {
    case .nominal: return "nominal"
    case .fair: return "fair"
    case .serious: return "serious"
    case .critical: return "critical"
    @unknown default: return "unknown"
    }
  }

  /// Performance cores: the thread count of ExecuTorch's threadpool.
  static var performanceCores: Int {
    var n: Int32 = 0
    var size = MemoryLayout<Int32>.size
    if sysctlbyname("hw.perflevel0.logicalcpu", &n, &size, nil, 0) == 0, n > 0 { return Int(n) }
    return ProcessInfo.processInfo.activeProcessorCount
  }

  /// phys_footprint (what iOS's memory limit counts) now and its peak, in MB; nil if unreadable.
  static func footprint() -> (current: Double, peak: Double)? {
    var info = task_vm_info_data_t()
    var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<integer_t>.size)
    let kr = withUnsafeMutablePointer(to: &info) {
      $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
        task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
      }
    }
    guard kr == KERN_SUCCESS else { return nil }
    return (Double(info.phys_footprint) / ResultsSchema.memoryMB,
            Double(info.ledger_phys_footprint_peak) / ResultsSchema.memoryMB)
  }
}
