package org.mobilellm.demo

import android.content.Context
import android.os.Build
import android.os.Debug
import android.os.PowerManager
import java.io.File
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone
import org.mobilellm.core.Benchmark
import org.mobilellm.core.Results

const val TAG = "MobileLLM"
const val DEFAULT_DIR = "/data/local/tmp/mobilellm"

/** What the results schema wants to know about this phone. */
object DeviceInfo {
    /** e.g. "Google Pixel 8 (Google Tensor G3)": model and SoC. */
    fun device(): String {
        val soc = if (Build.VERSION.SDK_INT >= 31 && Build.SOC_MODEL != Build.UNKNOWN) {
            "${Build.SOC_MANUFACTURER} ${Build.SOC_MODEL}"
        } else {
            Build.HARDWARE
        }
        val maker = Build.MANUFACTURER.replaceFirstChar { it.uppercase() }
        val model = if (Build.MODEL.startsWith(Build.MANUFACTURER, ignoreCase = true)) Build.MODEL else "$maker ${Build.MODEL}"
        return "$model ($soc)"
    }

    fun os(): String = "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})"

    fun runtime(): MutableMap<String, Any> = linkedMapOf(
        "executorch-android" to BuildConfig.EXECUTORCH_VERSION,
        "onnxruntime-android" to BuildConfig.ONNXRUNTIME_VERSION,
        "onnxruntime-genai-android" to BuildConfig.ONNXRUNTIME_GENAI_VERSION,
        "app" to BuildConfig.VERSION_NAME,
    )

    fun timestamp(): String = SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss'Z'", Locale.ROOT)
        .apply { timeZone = TimeZone.getTimeZone("UTC") }
        .format(Date())

    fun context(threads: Int) = Results.Context(device(), os(), runtime(), threads, timestamp())
}

/** The monotonic clock, this process's proportional set size and the device's thermal status. */
class AndroidProbe(context: Context) : Benchmark.Probe {
    private val power = context.getSystemService(Context.POWER_SERVICE) as PowerManager

    override fun nanoTime(): Long = System.nanoTime()

    override fun pssMb(): Double = Debug.getPss() / 1024.0 // KiB -> MB as the host counts RSS

    override fun thermal(): String = if (Build.VERSION.SDK_INT >= 29) {
        when (power.currentThermalStatus) {
            PowerManager.THERMAL_STATUS_NONE -> "none"
            PowerManager.THERMAL_STATUS_LIGHT -> "light"
            PowerManager.THERMAL_STATUS_MODERATE -> "moderate"
            PowerManager.THERMAL_STATUS_SEVERE -> "severe"
            PowerManager.THERMAL_STATUS_CRITICAL -> "critical"
            PowerManager.THERMAL_STATUS_EMERGENCY -> "emergency"
            PowerManager.THERMAL_STATUS_SHUTDOWN -> "shutdown"
            else -> "status ${power.currentThermalStatus}"
        }
    } else {
        "unknown (API < 29)"
    }
}

/** Writes `text` to `file` so a reader never sees half of it. */
fun writeAtomically(file: File, text: String) {
    val tmp = File(file.parentFile, ".${file.name}.tmp")
    tmp.writeText(text)
    check(tmp.renameTo(file)) { "cannot rename $tmp to $file" }
}
