# Runs the layering check on the fixture tree FIXTURE (whose health includes deploy without
# linking it) and fails unless the check fails naming that include, and only that one.
get_filename_component(FIXTURE ${FIXTURE} ABSOLUTE)
execute_process(
  COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=${FIXTURE} -DTABLE=${FIXTURE}/layers.cmake -P ${CHECK}
  RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
message("${output}")
if(result EQUAL 0)
  message(FATAL_ERROR "the check passed a tree with a wrong-way include")
endif()
set(expected "daemon/health/health_registry.cpp includes daemon/deploy/planner.hpp: health may not depend on deploy")
string(FIND "${output}" "${expected}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "the check failed without naming the wrong-way include: expected\n  ${expected}")
endif()
if(output MATCHES "clock.hpp")
  message(FATAL_ERROR "the check reported an allowed include (of core)")
endif()
