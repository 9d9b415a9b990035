# Debian 12's xsimd 8.1 package exports a target that links "xtl" (an optional
# dependency it was built with) although xsimd itself is header-only and
# libxtl-dev is not a dependency of the package. When no xtl target exists,
# drop that link so consumers do not fail with "cannot find -lxtl".
if(TARGET xsimd AND NOT TARGET xtl)
    get_target_property(_svq_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
    if(_svq_xsimd_links)
        list(REMOVE_ITEM _svq_xsimd_links xtl)
        set_property(TARGET xsimd PROPERTY INTERFACE_LINK_LIBRARIES "${_svq_xsimd_links}")
    endif()
    unset(_svq_xsimd_links)
endif()
