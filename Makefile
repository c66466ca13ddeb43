# Quick start: `make demo` (segment the bundled sample CT) and `make test` (the test suite).
# Each creates the virtual environment it needs, with pinned versions, if it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lightseg-installed

.PHONY: demo test venv clean orthanc

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,ray]'
	# Slicer's terminology files for the slicer-core tests, as trame-slicer packages them (files only: no dependencies)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps trame-slicer==1.7.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lightseg demo --output-dir demo-output --force

test: $(STAMP) orthanc
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

# The DICOM node's tests run a real PACS: Orthanc, Debian's package (installed here when it is missing)
orthanc:
	@command -v Orthanc >/dev/null || { echo "installing Orthanc (Debian package) for the DICOM node tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc >/dev/null; }

clean:
	rm -rf $(VENV) demo-output build
