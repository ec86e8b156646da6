# SPDX-License-Identifier: GPL-2.0
#
# The hmm-folio tests in a kernel tree's tools/testing/selftests/mm, included
# at the end of its Makefile by "make install-kselftest" of hmm-folio (after
# lib.mk: $(OUTPUT) is set, and lib.mk's install, clean and emit_tests read
# these lists when they run). test_hmm_folio.sh runs them:
# run_vmtests.sh -t hmm_folio.

HMM_FOLIO_PROGS := $(addprefix $(OUTPUT)/,hmm-folio-thp hmm-folio-reuse \
	hmm-folio-ioctl hmm-folio-pin hmm-folio-numa hmm-folio-twodev \
	hmm-folio-fork hmm-folio-sizes hmm-folio-perm hmm-folio-race \
	hmm-folio-stress hmm-folio-teardown)

TEST_GEN_FILES += $(HMM_FOLIO_PROGS)
TEST_PROGS += ksft_hmm_folio.sh
TEST_FILES += test_hmm_folio.sh
LOCAL_HDRS += hmm_folio_util.h hmm_folio_splats.h

all: $(HMM_FOLIO_PROGS)

$(HMM_FOLIO_PROGS): hmm_folio_util.c vm_util.c hugepage_settings.c \
	hmm_folio_util.h hmm_folio_splats.h

# liburing as the tree's check_config.sh found it (local_config.mk); without
# it hmm-folio-pin builds and skips its tests saying so. libnuma the mm
# Makefile needs anyway (ksm_tests, migration, rmap).
ifneq ($(IOURING_EXTRA_LIBS),)
$(OUTPUT)/hmm-folio-pin: CFLAGS += -DHAVE_LIBURING
$(OUTPUT)/hmm-folio-pin: LDLIBS += $(IOURING_EXTRA_LIBS)
endif
$(OUTPUT)/hmm-folio-numa: CFLAGS += -DHAVE_LIBNUMA
$(OUTPUT)/hmm-folio-numa: LDLIBS += -lnuma
