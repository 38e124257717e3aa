package org.mobilellm.core;

import static org.junit.Assert.assertEquals;

import org.junit.Test;

/** Runs CoreTests under Gradle (`./gradlew :core:test`); pytest runs the same methods with javac. */
public class CoreJUnitTest {
  @Test
  public void coreTests() {
    assertEquals("failed core tests (see the lines above)", 0, CoreTests.runAll());
  }
}
