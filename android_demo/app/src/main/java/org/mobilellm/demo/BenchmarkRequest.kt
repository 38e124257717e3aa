package org.mobilellm.demo

import android.content.Context
import android.content.Intent
import java.io.File
import org.mobilellm.core.Json

/**
 * BenchmarkActivity's settings under one spelling: `am start` extras (--es / --ei), `am instrument -e`
 * arguments (all strings) and the farms' (mobilellm/devices/android.py bench_args). The status file
 * the activity keeps beside its results is how a caller (the host, or BenchmarkInstrumentedTest)
 * learns that it finished.
 */
object BenchmarkRequest {
    val STRINGS = listOf("dir", "artifact", "out", "load_mode")
    val INTS = listOf("iters", "warmup", "threads", "prompt_len", "gen_tokens")
    /** Extra that keeps the activity open after the run, for a caller that closes it (ActivityScenario). */
    const val KEEP_OPEN = "keep_open"

    /** An intent for BenchmarkActivity from string arguments (`am instrument -e KEY VALUE`). */
    fun intent(context: Context, arg: (String) -> String?): Intent {
        val intent = Intent(context, BenchmarkActivity::class.java)
        for (k in STRINGS) arg(k)?.let { intent.putExtra(k, it) }
        for (k in INTS) arg(k)?.let {
            intent.putExtra(k, requireNotNull(it.toIntOrNull()) { "argument $k must be an integer, got '$it'" })
        }
        return intent
    }

    fun statusFile(context: Context, out: String) = File(context.filesDir, "$out.status")

    /** The status once it says done or error; fails after `timeoutMs`. */
    fun await(context: Context, out: String, timeoutMs: Long): Map<*, *> {
        val file = statusFile(context, out)
        val deadline = System.currentTimeMillis() + timeoutMs
        var last: Map<*, *>? = null
        while (System.currentTimeMillis() < deadline) {
            if (file.isFile) {
                last = runCatching { Json.parse(file.readText()) as Map<*, *> }.getOrNull() ?: last
                if (last?.get("state") == "done" || last?.get("state") == "error") return last
            }
            Thread.sleep(500)
        }
        error("the benchmark did not finish within ${timeoutMs / 1000} s (last status: $last)")
    }
}
