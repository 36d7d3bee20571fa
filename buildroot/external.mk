include $(sort $(wildcard $(BR2_EXTERNAL_SIP_CAPTURE_PATH)/package/*/*.mk))
