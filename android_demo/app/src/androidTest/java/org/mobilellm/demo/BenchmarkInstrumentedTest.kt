package org.mobilellm.demo

import android.os.Bundle
import androidx.test.core.app.ActivityScenario
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import java.io.File
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith

/**
 * The headless benchmark as an instrumentation test, for device farms (`am instrument`, the runner
 * ExecuTorch's Android LLM performance tests use):
 *
 *   adb shell am instrument -w -r -e class org.mobilellm.demo.BenchmarkInstrumentedTest \
 *       -e dir /data/local/tmp/mobilellm -e iters 50 -e warmup 5 -e threads 4 \
 *       org.mobilellm.demo.test/androidx.test.runner.AndroidJUnitRunner
 *
 * It starts BenchmarkActivity itself (foreground, screen kept on: the same code and the same
 * conditions as `am start`) with the arguments as intent extras (BenchmarkRequest), waits for its
 * status file, and copies the results (raw and warm-up samples, thermal state at start and end, as the
 * activity records them) from files/<out> to <external files>/results/<out>, which farms pull without
 * run-as. Arguments: those of BenchmarkActivity (dir, artifact, out, iters, warmup, threads,
 * prompt_len, gen_tokens, load_mode) and timeout_s (default 3600). The test fails if any artifact
 * could not be measured; the results of the others are kept.
 */
@RunWith(AndroidJUnit4::class)
class BenchmarkInstrumentedTest {
    @Test
    fun benchmarkEveryArtifact() {
        val instrumentation = InstrumentationRegistry.getInstrumentation()
        val args = InstrumentationRegistry.getArguments()
        val app = instrumentation.targetContext
        val out = args.getString("out") ?: "results-instrument-${DeviceInfo.timestamp().replace(":", "")}.json"
        val timeoutMs = (args.getString("timeout_s")?.toLongOrNull() ?: 3600L) * 1000
        BenchmarkRequest.statusFile(app, out).delete()
        val intent = BenchmarkRequest.intent(app) { if (it == "out") out else args.getString(it) }
            .putExtra(BenchmarkRequest.KEEP_OPEN, true)
        val status = ActivityScenario.launch<BenchmarkActivity>(intent).use {
            BenchmarkRequest.await(app, out, timeoutMs)
        }

        val results = File(app.filesDir, out)
        val report = Bundle().apply { putString("mobilellm_state", status["state"].toString()) }
        if (results.isFile) {
            val shared = File(app.getExternalFilesDir(null), "results").apply { mkdirs() }
            val copy = results.copyTo(File(shared, out), overwrite = true)
            report.putString("mobilellm_results", results.absolutePath)
            report.putString("mobilellm_results_shared", copy.absolutePath)
        }
        instrumentation.sendStatus(STATUS_RESULTS, report)

        assertEquals("benchmark failed: ${status["message"]}", "done", status["state"])
        val errors = (status["errors"] as? List<*>).orEmpty()
        assertTrue("artifacts not measured: " + errors.joinToString("; ") { (it as Map<*, *>)["message"].toString() },
            errors.isEmpty())
    }

    companion object {
        /** sendStatus code of the results line; AndroidJUnitRunner's own codes are 1, 0 and -1 .. -4. */
        const val STATUS_RESULTS = 2
    }
}
